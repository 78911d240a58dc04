"""`neucrab bench mini --quick`: the Mini-NeuCRaB smoke test CI runs, on the shipped checkpoints and real data.

The whole pipeline runs (extraction, measures, a 2 x 2 fine-tuning sweep, judgement, tables, plots); the test
then recomputes what the tables claim from the scores and accuracies the run wrote, independently (scipy's
Kendall tau-b and Pearson, Recall@1 by hand), and checks the cache makes a second run do no training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from neucrab.bench.suite import load_suite
from neucrab.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini-quick")
    out, cache = root / "out", root / "cache"
    assert main(["bench", "mini", "--quick", "--out", str(out), "--cache-dir", str(cache), "--no-progress"]) == 0
    return out, cache, json.loads((out / "results.json").read_text())


def test_quick_bench_writes_every_output(quick_run):
    out, _, document = quick_run
    suite = load_suite("mini", quick=True)
    assert set(document["sections"]) == {"group1", "group2", "all groups"}
    for name in ("table.md", "table.csv", "figure1_group1.png", "scatter_group1.png", "figure1_group2.png"):
        assert (out / name).stat().st_size > 0
    for group, entries in suite.groups.items():
        for label, result in document["groups"][group].items():
            assert set(result["accuracies"]) == {entry.name for entry in entries}, (group, label)
            assert all(0.0 <= accuracy <= 1.0 for accuracy in result["accuracies"].values())
    # LEEP needs a head: the headless VAE encoder has no LEEP score, the others do.
    digits = document["groups"]["group1"]["digits:300"]["scores"]
    assert "VAE-encoder-MNIST" not in digits["leep"] and "Sup-100%-MNIST" in digits["leep"]


def test_tables_follow_from_the_scores_and_accuracies_written(quick_run):
    _, _, document = quick_run
    for group in ("group1", "group2"):
        judged = document["sections"][group]["tasks"]
        for label, result in document["groups"][group].items():
            for measure in document["measures"]:
                scores = result["scores"][measure]
                names = sorted(set(scores) & set(result["accuracies"]))
                x = np.array([scores[n] for n in names])
                y = np.array([result["accuracies"][n] for n in names])
                metrics = judged[label][measure]
                if np.ptp(x) > 0 and np.ptp(y) > 0:
                    assert metrics["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)
                    assert metrics["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)
                # Recall@1: is the top-scored checkpoint among the most accurate ones?
                top = names[int(np.argmax(x))]
                expected = float(result["accuracies"][top] == y.max())
                if np.sum(x == x.max()) == 1:
                    assert metrics["recall@1"] == pytest.approx(expected)


def test_a_second_run_reuses_every_feature_and_training_run(quick_run, tmp_path):
    out, cache, document = quick_run
    before = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert main(["bench", "mini", "--quick", "--out", str(tmp_path / "again"), "--cache-dir", str(cache),
                 "--no-progress"]) == 0
    after = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert after == before  # nothing new was extracted or trained
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    for group in ("group1", "group2"):
        for label, result in document["groups"][group].items():
            assert again["groups"][group][label]["accuracies"] == result["accuracies"]
