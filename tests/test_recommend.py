"""The recommended score: the pool-rank mean of the recipe's measures, degenerate measures left out with a reason,
first in rank's default output."""

import numpy as np
import pytest

from neucrab import tasks
from neucrab.cells import Row, saturated
from neucrab.ranking import rank
from neucrab.recommend import RECIPE, RECOMMENDED, Recipe, combine


def rows(**columns):
    names = [f"c{i}" for i in range(len(next(iter(columns.values()))))]
    return [Row(checkpoint=n, scores={m: v[i] for m, v in columns.items() if v[i] is not None})
            for i, n in enumerate(names)]


def test_the_combined_score_is_the_mean_of_pool_normalised_ranks():
    pool = rows(a=[0.1, 0.5, 0.3, 0.9], b=[10.0, -5.0, 7.0, 8.0])
    assert combine(pool, Recipe(("a", "b"))) == {}
    # ranks of a: 1, 3, 2, 4; of b: 4, 1, 2, 3 (of 4) -> means 2.5, 2, 2, 3.5, over 4
    assert [row.scores[RECOMMENDED] for row in pool] == pytest.approx([2.5 / 4, 2 / 4, 2 / 4, 3.5 / 4])


def test_degenerate_measures_are_left_out_with_their_reason():
    pool = rows(a=[0.1, 0.5, 0.3], flat=[1.0, 1.0, 1.0], sat=[3.0, 2.0, 1.0], lonely=[None, 2.0, None])
    pool[0].notes["sat"] = saturated("H-score = C - 1")
    left_out = combine(pool, Recipe(("a", "flat", "sat", "lonely")))
    assert set(left_out) == {"flat", "sat", "lonely"}
    assert "same score" in left_out["flat"] and "saturated" in left_out["sat"] and "fewer" in left_out["lonely"]
    assert [row.scores[RECOMMENDED] for row in pool] == pytest.approx([1 / 3, 1.0, 2 / 3])  # a alone


def test_a_checkpoint_missing_a_kept_measure_gets_a_note_not_a_score():
    pool = rows(a=[0.1, 0.5, 0.3], b=[1.0, None, 3.0])
    pool.append(Row(checkpoint="broken", error="could not load"))
    combine(pool, Recipe(("a", "b")))
    assert RECOMMENDED not in pool[1].scores and pool[1].notes[RECOMMENDED] == "n/a: no b score"
    assert RECOMMENDED not in pool[3].scores and RECOMMENDED not in pool[3].notes


def test_rank_leads_with_the_recommendation(tmp_path):
    task = tasks.load("digits:100")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 4))
    specs = []
    for k, noise in enumerate((0.3, 1.0, 3.0)):  # less noise around the class centres: a better checkpoint
        arrays = {f"features_{s}": (centres[task.split(s).labels] + noise * rng.normal(size=(len(task.split(s)), 4)))
                  .astype(np.float32) for s in ("train", "test")}
        np.savez(tmp_path / f"f{k}.npz", **arrays)
        specs.append(str(tmp_path / f"f{k}.npz"))
    ranking = rank(specs, "digits:100", cache_dir=tmp_path / "cache", progress=False)
    assert ranking.measures[0] == RECOMMENDED and set(RECIPE.measures) <= set(ranking.measures)
    assert ranking.rows[0].checkpoint == specs[0]
    recommendation = ranking.to_dict()["recommendation"]
    assert recommendation["checkpoint"] == specs[0] and set(recommendation["p_best"]) == set(specs)
    assert max(recommendation["p_best"], key=recommendation["p_best"].get) == specs[0]
    assert all(len(row.draws["knn"]) == 50 for row in ranking.rows)
    # Each draw is kNN on that subsample of the training features (all 50 come from one neighbour search).
    from neucrab.measures import knn
    from neucrab.recommend import draw_indices

    labels = task.train.labels
    features = np.load(specs[1])["features_train"]
    drawn = next(row for row in ranking.rows if row.checkpoint == specs[1]).draws["knn"]
    assert drawn[:3] == [knn(features[draw_indices(labels, d)], labels[draw_indices(labels, d)]) for d in range(3)]
    # All 50 draws of a checkpoint's kNN are one record of the draw cache, which a rerun reads.
    assert len(list((tmp_path / "cache" / "draws").glob("*.json"))) == len(specs)


def test_draws_are_read_back_from_one_record_per_measure(tmp_path, monkeypatch):
    import neucrab.scoring

    task = tasks.load("digits:100")
    rng = np.random.default_rng(1)
    for k in range(2):
        np.savez(tmp_path / f"f{k}.npz", **{f"features_{s}": rng.normal(size=(len(task.split(s)), 3)).astype(np.float32)
                                           for s in ("train", "test")})
    specs = [str(tmp_path / f"f{k}.npz") for k in range(2)]
    first = rank(specs, task, measures=["recommended"], cache_dir=tmp_path / "cache", progress=False)

    def recomputed(*args):
        raise AssertionError("draws computed again")

    monkeypatch.setattr(neucrab.scoring, "_draw_values", recomputed)
    again = rank(specs, task, measures=["recommended"], cache_dir=tmp_path / "cache", progress=False)
    assert [row.draws for row in again.rows] == [row.draws for row in first.rows]
    assert not any(row.error for row in again.rows)


def test_draws_are_stratified_seeded_subsamples():
    from neucrab.recommend import draw_indices

    labels = np.repeat(np.arange(3), [10, 20, 5])
    first, again, other = draw_indices(labels, 0), draw_indices(labels, 0), draw_indices(labels, 1)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.bincount(labels[first]).tolist() == [8, 16, 4] and len(set(first)) == len(first)


def test_p_best_counts_the_draws_each_checkpoint_wins():
    from neucrab.recommend import certainty

    a, b, c = (Row(checkpoint=n) for n in "abc")
    # knn and logme draws: a wins draws 0 and 1 on both measures; b wins draw 2 on both; c never
    a.draws = {"knn": [0.9, 0.9, 0.1], "logme": [5.0, 5.0, 1.0]}
    b.draws = {"knn": [0.5, 0.5, 0.95], "logme": [2.0, 2.0, 6.0]}
    c.draws = {"knn": [0.1, 0.2, 0.05], "logme": [0.0, 0.1, 0.2]}
    sure = certainty([a, b, c], {}, Recipe(("knn", "logme")))
    assert sure["p_best_subsamples"] == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 0.0})
    assert sure["indistinguishable"] == ["b"] and sure["draws"] == 3
    assert sure["rank_interval"]["c"] == [3.0, 3.0]
    assert sum(sure["p_best"].values()) == pytest.approx(1.0)
    assert sure["p_best"]["a"] > sure["p_best"]["b"] > sure["p_best"]["c"] > 0


def test_calibrated_p_best_is_the_mean_softmax_of_the_draws_z_scores():
    from neucrab.recommend import calibrated_p_best

    z = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])  # draw 2 tells nobody apart: a third each
    e = np.exp(1.0)
    by_hand = (np.array([e, 1 / e, 1.0]) / (e + 1 / e + 1) + 1 / 3) / 2
    assert calibrated_p_best(z, 1.0) == pytest.approx(by_hand)
    halved = np.array([np.exp(2.0), np.exp(-2.0), 1.0]) / (np.exp(2.0) + np.exp(-2.0) + 1)
    assert calibrated_p_best(z[:1], 0.5) == pytest.approx(halved)
    # a cold softmax is the fraction of draws won (the uncalibrated P(best)); a hot one knows nothing
    assert calibrated_p_best(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), 1e-3) == pytest.approx([2 / 3, 1 / 3])
    assert calibrated_p_best(z, 1e6) == pytest.approx([1 / 3] * 3, abs=1e-5)


def test_draw_z_standardises_each_draw_over_the_pool():
    from neucrab.recommend import draw_z

    a, b, c = (Row(checkpoint=n) for n in "abc")
    a.draws, b.draws, c.draws = {"knn": [0.9, 0.5]}, {"knn": [0.6, 0.5]}, {"knn": [0.3, 0.5]}
    drawn, z = draw_z([a, b, c], {}, Recipe(("knn",)))
    assert [row.checkpoint for row in drawn] == ["a", "b", "c"]
    assert z[0] == pytest.approx([np.sqrt(1.5), 0.0, -np.sqrt(1.5)])  # (0.3 apart; population std 0.3*sqrt(2/3))
    assert z[1] == pytest.approx([0.0, 0.0, 0.0])  # constant in this draw


def test_the_report_leads_with_the_recommendation_and_shows_how_measures_agree(tmp_path):
    from html.parser import HTMLParser

    from neucrab.ranking import Ranking
    from neucrab.report import write_outputs

    pool = rows(knn=[0.9, 0.5, 0.1], logme=[1.0, 3.0, 2.0])
    combine(pool, Recipe(("knn",)))
    pool[2].notes["logme"] = saturated("logme: a made-up saturation")
    ranking = Ranking(task="t", measures=[RECOMMENDED, "knn", "logme"], rows=pool,
                      certainty={"p_best": {"c0": 0.7, "c1": 0.3, "c2": 0.0}, "indistinguishable": ["c1"]})
    page = (write_outputs(ranking, tmp_path)["report.html"]).read_text()

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.headings, self.cells, self._tag = [], [], None

        def handle_starttag(self, tag, attrs):
            self._tag = tag

        def handle_data(self, data):
            if self._tag == "h2" and data.strip():
                self.headings.append(data.strip())
            if self._tag == "td" and data.strip():
                self.cells.append(data.strip())

    text = Text()
    text.feed(page)
    assert text.headings[0] == "Recommended: c0"  # the answer comes first
    assert "Cannot be told apart from it at this sample size: c1" in page
    assert page.index("width:210px") < page.index("width:90px")  # P(best) bars, largest first (300 px = 1)
    # knn and logme order the three checkpoints c0 > c1 > c2 and c1 > c2 > c0: Kendall tau -1/3
    assert "-0.33" in text.cells and "+1.00" in text.cells
    assert "2 (2) saturated" in text.cells and "3 (1)" in text.cells  # a saturated score is flagged, not hidden
    assert 'title="saturated: logme: a made-up saturation"' in page
