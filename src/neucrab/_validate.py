"""Validation at the boundary: every measure turns its inputs into clean float64 arrays here.

Each check raises `InputError` with a one-line message naming the argument and what was expected, so a
measure never returns NaN or a silently wrong number on bad input.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

# Real softmax outputs saved in float32 sum to 1 only to ~1e-7; allow some slack but catch logits.
PROB_SUM_TOLERANCE = 1e-5


def as_features(features, name: str = "features") -> np.ndarray:
    """Return `features` as a finite float64 (N, D) array with N >= 1 and D >= 1."""
    try:
        array = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name}: expected a numeric (N, D) array, got {type(features).__name__} ({error})") from None
    if array.ndim != 2:
        raise InputError(f"{name}: expected a 2-d (N, D) array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name}: expected a non-empty (N, D) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise InputError(f"{name}: {bad} row(s) contain NaN or inf; expected finite values")
    return array


def encode_labels(labels, n: int, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Map N labels of any hashable kind to codes 0..C-1 (sorted class order); return (codes, classes).

    Remapping first is what keeps gaps (labels 0, 5, 9) or strings from creating phantom classes.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise InputError(f"{name}: expected a 1-d sequence of N labels, got shape {array.shape}")
    if array.shape[0] != n:
        raise InputError(f"{name}: expected {n} labels (one per feature row), got {array.shape[0]}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{name}: contains NaN or inf; expected class labels")
    try:
        classes, codes = np.unique(array, return_inverse=True)
    except TypeError:
        # Mixed types that numpy cannot sort: fall back to first-seen order.
        lookup: dict = {}
        codes = np.array([lookup.setdefault(label, len(lookup)) for label in array.tolist()])
        classes = np.array(list(lookup), dtype=object)
    return codes.astype(np.int64).reshape(-1), classes


def require_classes(codes: np.ndarray, measure: str, minimum: int = 2) -> int:
    """Return the number of classes, refusing fewer than `minimum`."""
    n_classes = int(codes.max()) + 1 if codes.size else 0
    if n_classes < minimum:
        raise InputError(f"labels: {measure} needs at least {minimum} classes, got {n_classes}")
    return n_classes


def features_and_labels(features, labels, measure: str, min_classes: int = 2):
    """Validate a (features, labels) pair; return (float64 features, codes, number of classes)."""
    x = as_features(features)
    codes, _ = encode_labels(labels, x.shape[0])
    n_classes = require_classes(codes, measure, min_classes)
    return x, codes, n_classes


def as_probabilities(source_probs, name: str = "source_probs") -> np.ndarray:
    """Return source-class probabilities as a float64 (N, S) array whose rows sum to 1.

    Rows may be off by up to PROB_SUM_TOLERANCE (float32 softmax) and are renormalised; anything
    further off (logits, unnormalised scores) is refused rather than silently rescaled.
    """
    probs = as_features(source_probs, name)
    if (probs < 0).any():
        raise InputError(f"{name}: has negative entries; expected probabilities (softmax outputs), not logits")
    sums = probs.sum(axis=1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > PROB_SUM_TOLERANCE:
        row = int(np.abs(sums - 1.0).argmax())
        raise InputError(
            f"{name}: row {row} sums to {sums[row]:.6g}; expected rows summing to 1 (within {PROB_SUM_TOLERANCE:g})"
        )
    return probs / sums[:, None]


# ------------------------------------------------------------------------------------- scalar options
# One rule per kind of option, one message shape: "<name>: expected <rule>, got <value>".
SEED_LIMIT = 2**32  # numpy's legacy RandomState (scikit-learn's random_state) takes seeds below 2**32


def _integer(value, name: str, rule: str) -> int:
    import operator

    if isinstance(value, bool):
        raise InputError(f"{name}: expected {rule}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise InputError(f"{name}: expected {rule}, got {value!r}") from None


def check_seed(value, name: str = "seed") -> int:
    """A seed: an integer in [0, 2**32)."""
    rule = "an integer seed in [0, 2**32)"
    seed = _integer(value, name, rule)
    if not 0 <= seed < SEED_LIMIT:
        raise InputError(f"{name}: expected {rule}, got {value!r}")
    return seed


def check_count(value, name: str, minimum: int = 1) -> int:
    """A count: an integer >= minimum (1 unless said otherwise)."""
    rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    count = _integer(value, name, rule)
    if count < minimum:
        raise InputError(f"{name}: expected {rule}, got {value!r}")
    return count


def _real(value, name: str, rule: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise InputError(f"{name}: expected {rule}, got {value!r}")
    return float(value)


def check_number(value, name: str, low: float, high: float, *, open_low: bool = False,
                 open_high: bool = False) -> float:
    """A finite real number in the interval from low to high (closed unless open_low / open_high)."""
    rule = f"a number in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    number = _real(value, name, rule)
    if number < low or number > high or (open_low and number == low) or (open_high and number == high):
        raise InputError(f"{name}: expected {rule}, got {value!r}")
    return number


def check_fraction(value, name: str) -> float:
    """A fraction in (0, 1] (of variance, of samples)."""
    return check_number(value, name, 0.0, 1.0, open_low=True)


def check_positive(value, name: str) -> float:
    """A positive finite real number (a learning rate, an epsilon, a resource amount)."""
    rule = "a positive finite number"
    number = _real(value, name, rule)
    if not number > 0:
        raise InputError(f"{name}: expected {rule}, got {value!r}")
    return number


def check_learning_rate(value, name: str = "lr") -> float:
    """A learning rate: a positive finite number."""
    return check_positive(value, name)
