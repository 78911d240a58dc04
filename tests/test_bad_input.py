"""Bad input for every registered array measure: a well-defined finite score or a one-line InputError.

Per-measure test files check the documented choice in detail; this file makes sure that no measure, present
or future, returns NaN or a bare traceback on the cases DESIGN.md lists.
"""

import numpy as np
import pytest
from measure_inputs import array_measures, call, softmax

from neucrab import InputError

MEASURES = array_measures()
ids = [info.name for info in MEASURES]


def _data(n=60, d=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = rng.normal(size=(n, d)) + labels[:, None]
    probs = softmax(rng.normal(size=(n, 5)) + np.eye(5)[labels])
    return features, labels, probs


def _score_or_input_error(info, features, labels, probs):
    """Return the finite score, or None when the measure refused with a one-line InputError."""
    try:
        score = call(info, features, labels, probs=probs)
    except InputError as error:
        assert "\n" not in str(error) and str(error), f"{info.name}: message must be one non-empty line"
        return None
    assert isinstance(score, float) and np.isfinite(score), f"{info.name} returned {score!r}"
    return score


@pytest.mark.parametrize("info", MEASURES, ids=ids)
def test_empty_input_is_refused(info):
    with pytest.raises(InputError):
        call(info, np.empty((0, 4)), np.empty(0), probs=np.empty((0, 4)))


@pytest.mark.parametrize("info", MEASURES, ids=ids)
def test_length_mismatch_is_refused(info):
    features, labels, probs = _data()
    with pytest.raises(InputError, match="labels"):
        call(info, features, labels[:-1], probs=probs)


@pytest.mark.parametrize("info", MEASURES, ids=ids)
def test_nan_and_inf_are_refused(info):
    features, labels, probs = _data()
    features[3, 2] = np.nan
    probs = probs.copy()
    probs[3] = [np.inf, 0, 0, 0, 0]
    with pytest.raises(InputError, match="NaN or inf"):
        call(info, features, labels, probs=probs)


@pytest.mark.parametrize("info", MEASURES, ids=ids)
def test_one_class_only(info):
    features, labels, probs = _data()
    _score_or_input_error(info, features, np.zeros_like(labels), probs)


@pytest.mark.parametrize("info", MEASURES, ids=ids)
@pytest.mark.parametrize(
    "case",
    ["class_with_one_sample", "constant_column", "duplicate_columns", "more_dims_than_samples", "float32"],
)
def test_degenerate_but_valid_input_gives_a_finite_score(info, case):
    features, labels, probs = _data()
    if case == "class_with_one_sample":
        labels = labels.copy()
        labels[0] = 7
    elif case == "constant_column":
        features[:, 1] = 5.0
    elif case == "duplicate_columns":
        features = np.hstack([features, features[:, :3]])
    elif case == "more_dims_than_samples":
        features = np.random.default_rng(1).normal(size=(features.shape[0], 200)) + labels[:, None]
    elif case == "float32":
        features, probs = features.astype(np.float32), probs.astype(np.float32)
    score = _score_or_input_error(info, features, labels, probs)
    if case in ("constant_column", "duplicate_columns", "more_dims_than_samples", "float32"):
        assert score is not None, f"{info.name} must score valid features ({case}), not refuse them"


@pytest.mark.parametrize("info", MEASURES, ids=ids)
def test_relabelling_with_strings_and_gaps_keeps_the_score(info):
    features, labels, probs = _data()
    # A monotone relabelling keeps the class order, so even order-dependent code paths agree exactly.
    renamed = np.array([f"class-{10 * label + 3:03d}" for label in labels])
    assert call(info, features, renamed, probs=probs) == pytest.approx(call(info, features, labels, probs=probs))


def test_probabilities_must_sum_to_one():
    features, labels, probs = _data()
    for info in array_measures("source_probs"):
        with pytest.raises(InputError, match="sums to"):
            call(info, features, labels, probs=probs * 1.01)
        with pytest.raises(InputError, match="negative"):
            call(info, features, labels, probs=np.log(probs))
        # float32 softmax rows sum to 1 only within ~1e-7: accepted.
        assert np.isfinite(call(info, features, labels, probs=(probs * (1 + 3e-7)).astype(np.float32)))
