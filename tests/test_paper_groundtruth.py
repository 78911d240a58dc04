"""The paper's published ground truth (appendix Tables 7-10) and `neucrab evaluate` on cases with known answers."""

import csv
import io
import json
import math
import os
import re
from pathlib import Path

import pytest

from neucrab.bench.evaluate_files import evaluate_files, load_groundtruth
from neucrab.bench.paper_groundtruth import GROUPS, TASKS, paper_groundtruth
from neucrab.cli import main
from neucrab.errors import InputError

# The paper's text lies in shared/ beside the checkout (developers' machines and CI alike).
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared" / "paper" / "ranking-neural-checkpoints.txt"
PAPER_TEXT = Path(os.environ.get("NEUCRAB_PAPER_TEXT", _BESIDE_CHECKOUT))


# ------------------------------------------------------------------------------ transcription
def test_pinned_values_from_the_tables():
    group1, group2 = paper_groundtruth("group1"), paper_groundtruth("paper:group2")
    # Table 7, first column block: "51.44 / 49.28 / 81.59 / 47.97" (From-Scratch, one value per line).
    assert [group1[t]["From-Scratch"] for t in TASKS] == [51.44, 49.28, 81.59, 47.97]
    # Table 7, 14th column: "94.42 / 93.05 / 85.37 / 70.98" (Sup-100%-Img); 2nd column "41.99 / 17.46 /
    # 80.55 / 30.5" (WAE-UKL, printed without the trailing zero).
    assert [group1[t]["Sup-100%-Img"] for t in TASKS] == [94.42, 93.05, 85.37, 70.98]
    assert [group1[t]["WAE-UKL"] for t in TASKS] == [41.99, 17.46, 80.55, 30.50]
    # Table 8, 5th column "94.73 / 93.6 / 85.43 / 71.24" (Img-300k); last column "87.48 / 82.88 / 85.4 / 73.6".
    assert [group2[t]["Img-300k"] for t in TASKS] == [94.73, 93.60, 85.43, 71.24]
    assert [group2[t]["Pla-200k"] for t in TASKS] == [87.48, 82.88, 85.40, 73.60]
    group3, group4 = paper_groundtruth("group3"), paper_groundtruth("group4")
    # Table 9, first column "94.02 / 93.39 / 86.23 / 71.52" (Inception-ResNet-v2, see the module docstring);
    # 7th "86.59 / 84.44 / 84.42 / 56.88" (MobileNet-v1-025); 11th "90.52 / 89.01 / 84.77 / 64.63" (printed
    # MobileNet-v1-small, named MobileNet-v3-small).
    assert [group3[t]["Inception-ResNet-v2"] for t in TASKS] == [94.02, 93.39, 86.23, 71.52]
    assert [group3[t]["MobileNet-v1-025"] for t in TASKS] == [86.59, 84.44, 84.42, 56.88]
    assert [group3[t]["MobileNet-v3-small"] for t in TASKS] == [90.52, 89.01, 84.77, 64.63]
    # Table 10, first column "54.47 / 49.85 / 82.14 / 46.87" (From-Scratch, a ResNet-101); last column
    # "88.14 / 84.62 / 85.09 / 74.24" (Pla-200k).
    assert [group4[t]["From-Scratch"] for t in TASKS] == [54.47, 49.85, 82.14, 46.87]
    assert [group4[t]["Pla-200k"] for t in TASKS] == [88.14, 84.62, 85.09, 74.24]


def test_group_shapes():
    # Groups I-IV: 17, 13, 13, 13 columns (Table 7 lists From-Scratch and 16 pre-trained ResNet-50s; Tables 8
    # and 10 From-Scratch and 12 stages; Table 9 thirteen architectures), four tasks, percentages.
    assert {g: len(table) for g, table in GROUPS.items()} == {"group1": 17, "group2": 13, "group3": 13, "group4": 13}
    for group in GROUPS:
        truth = paper_groundtruth(group)
        assert list(truth) == list(TASKS)
        assert all(set(truth[t]) == set(GROUPS[group]) and all(0 < v < 100 for v in truth[t].values())
                   for t in TASKS)


def test_claims_of_the_paper_text_hold():
    g1, g2, g4 = (paper_groundtruth(g) for g in ("group1", "group2", "group4"))
    # Table 8 repeats Group I's From-Scratch column.
    assert all(g1[t]["From-Scratch"] == g2[t]["From-Scratch"] for t in TASKS)
    # "the converged model ... does not always transfer the best (cf. Img-270k vs. Img-300k on Camelyon,
    # Inat-270k vs. Inet-300k on Flowers102, etc.)"
    assert g2["Camelyon"]["Img-270k"] > g2["Camelyon"]["Img-300k"]
    assert g2["Flowers102"]["Inat-270k"] > g2["Flowers102"]["Img-300k"]
    # Appendix A.4 on Group IV: "Img-270k is better than Img-300k on Flowers102".
    assert g4["Flowers102"]["Img-270k"] > g4["Flowers102"]["Img-300k"]
    # Section 2.2: "The highest-performance checkpoints change from one downstream task to another."
    assert len({max(g1[t], key=g1[t].get) for t in TASKS}) == 4


# The only skip: a checkout without shared/ beside it has no paper text; CI lays shared/ there, so it runs in CI.
@pytest.mark.skipif(not PAPER_TEXT.exists(), reason="the paper's text extraction is not available here")
def test_every_value_against_the_text_extraction():
    # Each table's numbers stand one per line, four per column, between the table's last column name and the
    # next table's header block (see the module docstring for the layout).
    lines = PAPER_TEXT.read_text().split("\n")

    def first(text, after=0):
        return next(i for i, line in enumerate(lines) if line.strip() == text and i > after)

    def caption(n):
        return next(i for i, line in enumerate(lines) if line.startswith(f"Table {n}."))

    def numbers(start, stop):
        values = [float(line) for line in lines[start:stop] if re.fullmatch(r"\s*\d+(\.\d+)?\s*", line)]
        return [tuple(values[i : i + 4]) for i in range(0, len(values), 4)]

    start = first("Sup-100%-Pla")
    spans = {"group1": (start, first("Dataset", start)), "group2": (caption(7), first("Inception-v1")),
             "group3": (caption(8), first("Img-90k", caption(8))), "group4": (caption(9), caption(10))}
    for group, (a, b) in spans.items():
        assert numbers(a, b) == list(GROUPS[group].values()), group


# --------------------------------------------------------------------------- evaluate, paper
def _rank_json(task, columns: dict) -> dict:
    """A `neucrab rank --format json` object with one row per checkpoint."""
    names = next(iter(columns.values()))
    return {"task": task, "measures": list(columns), "rows": [
        {"checkpoint": name, "scores": {m: columns[m][name] for m in columns}} for name in names]}


def test_evaluate_paper_group1_end_to_end(tmp_path, capsys):
    # Known answer: a "measure" equal to the accuracies ranks perfectly (Recall@k = Rel@k = Pearson = Kendall =
    # weighted Kendall = 1 on every task); its negation ranks exactly backwards (correlations -1, and the top
    # pick is the worst checkpoint, so Recall@1 = 0 and Rel@1 = worst / best).
    truth = paper_groundtruth("group1")
    rankings = [_rank_json(task.lower(), {"oracle": acc, "backwards": {k: -v for k, v in acc.items()}})
                for task, acc in truth.items()]  # lower-case task names still match
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(rankings))
    assert main(["evaluate", "--scores", str(path), "--groundtruth", "paper:group1", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mean"]["oracle"] == {**{m: 1.0 for m in report["mean"]["oracle"] if m != "tasks"}, "tasks": 4}
    backwards = report["mean"]["backwards"]
    assert backwards["pearson"] == pytest.approx(-1) and backwards["kendall"] == pytest.approx(-1)
    assert backwards["weighted_tau"] == pytest.approx(-1) and backwards["recall@1"] == 0.0
    worst_over_best = [min(acc.values()) / max(acc.values()) for acc in truth.values()]
    assert backwards["rel@1"] == pytest.approx(sum(worst_over_best) / 4)
    assert {task: r["checkpoints"] for task, r in report["tasks"].items()} == {t.lower(): 17 for t in TASKS}


def test_table_output_in_percent(tmp_path, capsys):
    truth = paper_groundtruth("group3")["Sun397"]
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(_rank_json("Sun397", {"oracle": truth})))
    assert main(["evaluate", "--scores", str(path), "--groundtruth", "paper:group3"]) == 0
    out = capsys.readouterr().out
    assert "Recall@1" in out and "Kendall" in out and "100.00" in out


# --------------------------------------------------------------------------- evaluate, by hand
SCORES_CSV = """task,checkpoint,measure,score
A,a,m,3
A,b,m,2
A,c,m,1
A,d,m,0
B,a,m,1
B,b,m,2
B,c,m,3
B,d,m,4
"""
TRUTH_CSV = """task,checkpoint,accuracy
A,a,0.5
A,b,0.9
A,c,0.1
A,d,0.3
B,a,0.2
B,b,0.4
B,c,0.6
B,d,0.8
"""


def test_small_csv_case_by_hand(tmp_path, capsys):
    (tmp_path / "s.csv").write_text(SCORES_CSV)
    (tmp_path / "g.csv").write_text(TRUTH_CSV)
    assert main(["evaluate", "--scores", str(tmp_path / "s.csv"), "--groundtruth", str(tmp_path / "g.csv"),
                 "--format", "csv"]) == 0
    rows = {(r["scope"], r["task"]): r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    a, b, mean = rows["task", "A"], rows["task", "B"], rows["mean", ""]
    # Task A. Top-1 by score is a (0.5) but the best is b (0.9): Recall@1 = 0, Rel@1 = 0.5 / 0.9. Top-3
    # (a, b, c) holds b: Recall@3 = Rel@3 = 1. Kendall: of the 6 pairs, (a, b) and (c, d) are discordant:
    # (4 - 2) / 6 = 1/3. Pearson: dx = (1.5, .5, -.5, -1.5), dy = (.05, .45, -.35, -.15): sum dx dy = 0.7,
    # sum dx^2 = 5, sum dy^2 = 0.35, r = 0.7 / sqrt(1.75).
    expected_a = {"recall@1": 0.0, "rel@1": 0.5 / 0.9, "recall@3": 1.0, "rel@3": 1.0, "kendall": 1 / 3,
                  "pearson": 0.7 / math.sqrt(1.75)}
    # Task B: scores and accuracies in the same order: every metric 1.
    expected_b = {m: 1.0 for m in ("recall@1", "rel@1", "recall@3", "rel@3", "kendall", "pearson", "weighted_tau")}
    for row, expected in ((a, expected_a), (b, expected_b)):
        assert row["checkpoints"] == "4"
        for metric, value in expected.items():
            assert float(row[metric]) == pytest.approx(value), metric
    # The mean over the two tasks.
    for metric in expected_a:
        assert float(mean[metric]) == pytest.approx((expected_a[metric] + expected_b[metric]) / 2), metric
    assert mean["tasks"] == "2"


def test_mismatched_checkpoints_are_one_line_error_or_intersected(tmp_path, capsys):
    (tmp_path / "s.csv").write_text(SCORES_CSV + "A,e,m,9\n")  # e has no ground truth
    (tmp_path / "g.csv").write_text(TRUTH_CSV.replace("A,d,0.3\n", ""))  # d has no accuracy on task A
    args = ["evaluate", "--scores", str(tmp_path / "s.csv"), "--groundtruth", str(tmp_path / "g.csv")]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "'e'" in error and "'d'" in error and "s.csv" in error and "--intersect" in error
    assert main([*args, "--intersect", "--format", "json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    # Task A on a, b, c: scores 3, 2, 1 against 0.5, 0.9, 0.1: top-1 a (0.5 of best 0.9); Kendall (2 - 1) / 3.
    assert report["tasks"]["A"]["checkpoints"] == 3
    assert report["tasks"]["A"]["measures"]["m"]["rel@1"] == pytest.approx(0.5 / 0.9)
    assert report["tasks"]["A"]["measures"]["m"]["kendall"] == pytest.approx(1 / 3)
    assert report["left_out"] == {"A": ["d", "e"]}
    assert "left out d, e" in captured.err


@pytest.mark.parametrize(
    "scores, truth, match",
    [
        ("task,checkpoint,score\nA,a,1\n", TRUTH_CSV, r"s\.csv: CSV header .* lacks column\(s\) \['measure'\]"),
        ("task,checkpoint,measure,score\nA,a,m,high\n", TRUTH_CSV, r"s\.csv: line 2, column score: expected a score"),
        (SCORES_CSV.replace("B,", "C,"), TRUTH_CSV, r"task 'C' is not in the ground truth"),
        (SCORES_CSV, "paper:group5", "unknown paper group"),
        ('{"task": "A"}', TRUTH_CSV, r"s\.json: field 'rows' missing"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, scores, truth, match):
    scores_path = tmp_path / ("s.json" if scores.startswith("{") else "s.csv")
    scores_path.write_text(scores)
    if not truth.startswith("paper:"):
        (tmp_path / "g.csv").write_text(truth)
        truth = str(tmp_path / "g.csv")
    with pytest.raises(InputError, match=match) as caught:
        evaluate_files([scores_path], truth)
    assert "\n" not in str(caught.value)


def test_groundtruth_json_forms_agree(tmp_path):
    expected = {"A": {"a": 0.5, "b": 0.9}}
    forms = [
        {"task": "A", "accuracies": {"a": 0.5, "b": 0.9}, "runs": {}},  # neucrab groundtruth --out FILE.json
        [{"task": "A", "checkpoint": "a", "accuracy": 0.5}, {"task": "A", "checkpoint": "b", "accuracy": 0.9}],
        {"A": {"a": 0.5, "b": 0.9}},
    ]
    for i, form in enumerate(forms):
        path = tmp_path / f"g{i}.json"
        path.write_text(json.dumps(form))
        assert load_groundtruth(path) == expected
