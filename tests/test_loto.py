"""Leave-one-task-out recipe scoring on a synthetic bench document whose answers are known."""

import numpy as np
import pytest

from neucrab.bench.loto import combined, leave_one_task_out, to_markdown


def document(seed=0):
    rng = np.random.default_rng(seed)
    groups = {}
    for group in ("g1", "g2"):
        groups[group] = {}
        for task in ("t1", "t2", "t3", "t4"):
            names = [f"c{i}" for i in range(6)]
            accuracy = dict(zip(names, rng.uniform(0.5, 0.9, 6)))
            scores = {"knn": {n: 2 * a + 1 for n, a in accuracy.items()},  # the ground truth's own order
                      "logme": {n: -a for n, a in accuracy.items()},  # exactly backwards
                      "gbc": {n: float(rng.normal()) for n in names},  # noise
                      "sfda": {n: 1.0 for n in names}}  # saturated: the same for everyone
            groups[group][task] = {"scores": scores, "accuracies": accuracy}
    return {"measures": ["knn", "logme", "gbc", "sfda"], "groups": groups}


def test_the_recipes_find_the_measure_that_orders_like_the_ground_truth():
    report = leave_one_task_out(document())
    recipes = report["recipes"]
    assert recipes["single: knn"]["weighted_tau"]["mean"] == pytest.approx(1.0)
    assert recipes["single: logme"]["weighted_tau"]["mean"] == pytest.approx(-1.0)
    assert recipes["single: sfda"]["weighted_tau"]["mean"] == 0.0  # a constant score ranks nothing
    best = recipes["best single (chosen on the other tasks)"]
    assert set(best["chosen"].values()) == {"knn"} and best["weighted_tau"]["mean"] == pytest.approx(1.0)
    assert all(choice == ["knn"] for choice in recipes["rank mean (measures chosen on the other tasks)"]
               ["chosen"].values())  # adding a worse measure never raised the training mean
    assert "| single: knn | 100.0" in to_markdown(report)


def test_a_constant_measure_is_left_out_of_a_combination():
    pool = document()["groups"]["g1"]["t1"]
    with_constant = combined(pool, ["knn", "sfda"], "rank")
    alone = combined(pool, ["knn"], "rank")
    assert with_constant == pytest.approx(alone)


def test_reliability_bins_and_ece_by_hand():
    from neucrab.bench.calibration import reliability

    found = [(0.95, True, "p1"), (0.05, False, "p1"), (0.55, False, "p2"), (0.45, True, "p2")]
    report = reliability(found)
    assert [row["count"] for row in report["bins"]] == [1, 1, 1, 1]
    # gaps: |0.05-0|, |0.45-1|, |0.55-0|, |0.95-1| -> mean (0.05 + 0.55 + 0.55 + 0.05) / 4
    assert report["ece"] == pytest.approx(0.3) and report["pools"] == 2


def test_budget_replay_by_hand(tmp_path):
    import json

    from neucrab.bench.budget import replay

    truth = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5, "f": 0.4, "g": 0.3, "h": 0.2, "i": 0.1, "j": 0.05}
    # the recommendation (knn and logme agree) ranks c first, then a, b, ...: wrong at the top
    order = ["c", "a", "b", "d", "e", "f", "g", "h", "i", "j"]
    rank_score = {name: float(len(order) - i) for i, name in enumerate(order)}
    scores = {"knn": rank_score, "logme": rank_score}

    def accuracy(name, lr, steps):  # lr 0.01 orders like the truth, lr 0.1 backwards; short runs at half
        return (truth[name] if lr == 0.01 else 1 - truth[name]) * (0.5 if steps == 10 else 1.0)

    runs = {name: [{"lr": lr, "steps": s, "accuracy": accuracy(name, lr, s)} for lr in (0.01, 0.1) for s in (10, 30)]
            for name in truth}
    (tmp_path / "groundtruth" / "g").mkdir(parents=True)
    for task in ("t1", "t2"):
        (tmp_path / "groundtruth" / "g" / f"{task}.json").write_text(json.dumps({"runs": runs}))
    pool = {"accuracies": truth, "scores": scores}
    (tmp_path / "results.json").write_text(json.dumps({
        "sweep": {"steps": [10, 30], "lrs": [0.01, 0.1]}, "groups": {"g": {"t1": pool, "t2": pool}}}))
    report = replay(tmp_path)
    strategies = report["strategies"]
    assert strategies["recommendation alone"]["recall@1"] == 0.0  # c
    assert strategies["even: every checkpoint 10 steps at lr 0.01"]["recall@1"] == 1.0
    assert strategies["even: every checkpoint 10 steps at lr 0.1"]["recall@1"] == 0.0  # j looks best
    # full sweep 10 x 2 x 30 = 600 steps. At 10% (60): halving k = 2 (2 x 10 + 1 x 30 = 50; k = 3 costs 90);
    # long k = 2 (60); short k = 6 (60); sweep k = 1 (2 x 30 each): nothing fits, the recommendation alone.
    assert strategies["halving at 10%, lr 0.01"] == {"recall@1": 1.0, "rel@1": 1.0, "cost": pytest.approx(50 / 600)}
    assert strategies["long at 10%, lr 0.01"] == {"recall@1": 1.0, "rel@1": 1.0, "cost": pytest.approx(60 / 600)}
    assert strategies["short at 10%, lr 0.01"]["cost"] == pytest.approx(60 / 600)
    assert strategies["long at 10%, lr 0.1"] == {"recall@1": 0.0, "rel@1": pytest.approx(0.7 / 0.9),
                                                 "cost": pytest.approx(60 / 600)}  # c (0.3) over a (0.1)
    assert strategies["sweep at 10%, every lr"] == {"recall@1": 0.0, "rel@1": pytest.approx(0.7 / 0.9), "cost": 0.0}
    # at 20% (120) the sweep affords k = 2 at both rates: c's best run 0.7, a's 0.9
    assert strategies["sweep at 20%, every lr"] == {"recall@1": 1.0, "rel@1": 1.0, "cost": pytest.approx(120 / 600)}
    assert strategies["halving at 5%, lr 0.01"]["cost"] == 0.0  # nothing fits in 30 steps
    assert strategies["best zero-fine-tuning measure in hindsight (knn)"]["recall@1"] == 0.0
    held_out = report["leave_one_task_out"]["10%"]  # chosen on t2, scored on t1 and the other way round
    assert held_out["chosen"] == {"t1": "halving at 10%, lr 0.01", "t2": "halving at 10%, lr 0.01"}
    assert held_out["recall@1"] == 1.0 and held_out["recommendation_recall@1"] == 0.0
    assert held_out["sign_test"]["wins"] == 2 and held_out["sign_test"]["losses"] == 0
