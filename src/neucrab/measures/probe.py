"""Linear probe: multinomial logistic regression on frozen features, scored by test accuracy.

The paper's "Linear (1 epoch)", "Linear (5 epochs)" and "Linear (converged)" rankers (Li et al., CVPR 2021,
section 3.2): the checkpoint's head is replaced by a linear classifier trained on the task's frozen training
features; the ranking score is its accuracy on the test features.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.optimize

from .. import flops
from .._validate import as_features, check_count, check_seed, encode_labels, require_classes
from ..errors import InputError
from .pca import top_eigenpairs
from .registry import TRAIN_TEST, register

L2 = 1e-4  # converged probe: penalty (L2 / 2) * |W|^2 on the mean cross-entropy (sklearn C = 1 / (L2 * N))
GTOL = 1e-5  # converged probe: stop when every gradient entry is below this (scipy's pgtol)
FTOL = 64 * np.finfo(float).eps  # ... or when the relative loss decrease is below this (as scikit-learn)
MAX_ITER = 1000  # converged probe: L-BFGS iteration cap (a RuntimeWarning says when it is reached)
BATCH_SIZE = 256  # epoch-limited probe: minibatch size (the last batch of an epoch may be smaller)
MOMENTUM = 0.9  # epoch-limited probe: heavy-ball momentum, PyTorch convention v = mu v + g, w -= lr v

_CITATION = "Li et al., CVPR 2021 (Ranking Neural Checkpoints), section 3.2"
_CARE = (
    "features standardised with training-split statistics (constant columns become 0); test labels mapped "
    "with the training classes, a label unseen in training counts as wrong; float64 throughout"
)


def _standardise_cost(n, d, test_n):
    return 4.0 * n * d + 2.0 * test_n * d


def _linear_probe_cost(n, d, c, sources, test_n, *, iterations=MAX_ITER, history=10):
    p = (d + 1) * c
    # one loss-and-gradient evaluation per L-BFGS iteration: logits and gradient GEMMs, softmax; the
    # two-loop recursion over `history` pairs (~8 history p); prediction on the test split.
    evaluation = flops.gemm(n, d, c) + flops.gemm(d, n, c) + 6.0 * n * c + 4.0 * p
    return _standardise_cost(n, d, test_n) + iterations * (evaluation + 8.0 * history * p) + flops.gemm(test_n, d, c)


def _sgd_probe_cost(n, d, c, test_n, epochs):
    s = min(n, d)
    curvature = (flops.gemm(d, n, d) if d <= n else flops.gemm(n, d, n)) + flops.top_eigenpairs(s, 1, dense=s <= 256)
    per_epoch = (flops.gemm(n, d, c) + flops.gemm(d, n, c) + 6.0 * n * c
                 + math.ceil(n / BATCH_SIZE) * 6.0 * (d + 1) * c)
    return _standardise_cost(n, d, test_n) + curvature + epochs * per_epoch + flops.gemm(test_n, d, c)


def _linear_probe_1ep_cost(n, d, c, sources, test_n):
    return _sgd_probe_cost(n, d, c, test_n, epochs=1)


def _linear_probe_5ep_cost(n, d, c, sources, test_n):
    return _sgd_probe_cost(n, d, c, test_n, epochs=5)


@register(
    "linear_probe",
    needs=TRAIN_TEST,
    description="test accuracy of multinomial logistic regression trained to convergence (L-BFGS, L2 1e-4)",
    citation=_CITATION,
    care=_CARE,
    cost=_linear_probe_cost,
)
def linear_probe(features, labels, test_features, test_labels, *, epochs: int | None = None, seed=0) -> float:
    """Test accuracy in [0, 1] of a multinomial logistic regression on frozen features.

    Preprocessing: every feature column is standardised with the training split's mean and (population)
    standard deviation; a constant training column is only centred (it becomes 0 and carries no weight).
    The same transform is applied to the test features.

    Training (bias b unpenalised, weights W zero-initialised, float64):
      - epochs=None (converged): minimise mean cross-entropy + (L2 / 2) * |W|_F^2 with L2 = 1e-4 by
        L-BFGS (scipy's L-BFGS-B, full batch) until max |gradient| <= 1e-5 or the relative loss decrease
        is <= 64 eps, at most 1000 iterations (RuntimeWarning if reached). Equivalent to scikit-learn's
        LogisticRegression(C=1 / (1e-4 * N)) on the standardised features.
      - epochs=E (an int >= 1): E passes of minibatch SGD on the mean cross-entropy (no weight decay),
        batch 256, momentum 0.9, shuffled by numpy.random.default_rng(seed) (one permutation per epoch).
        Learning rate 1 / L, where L = lambda_max([x, 1]^T [x, 1] / N) / 2 bounds the curvature of the
        loss (the softmax Hessian is at most 1/2), so the step needs no tuning per feature scale or
        dimension. E = 1 and E = 5 are the paper's "Linear (1 epoch)" and "Linear (5 epochs)".

    Prediction is the arg-max class (lowest class index on an exact tie). Test labels are mapped to the
    training classes by equality; a test label that never occurs in training counts as wrong.

    Parameters
    ----------
    features : array (N, D) training features; labels : N training labels (at least 2 classes).
    test_features : array (M, D), M >= 1; test_labels : M labels.
    epochs : None (train to convergence) or int >= 1.
    seed : int in [0, 2**32), seed of the minibatch shuffling (unused when epochs is None).

    Returns
    -------
    float in [0, 1]: fraction of test samples predicted correctly.
    """
    x, codes, classes = _training_split(features, labels)
    test_x, test_codes = _test_split(test_features, test_labels, x.shape[1], classes)
    epochs = None if epochs is None else check_count(epochs, "epochs")
    seed = check_seed(seed)
    predicted = _train_and_predict(x, codes, classes.size, test_x, epochs, seed)
    return float(np.mean(predicted == test_codes))


@register(
    "linear_probe_1ep",
    needs=TRAIN_TEST,
    description="test accuracy of multinomial logistic regression after 1 epoch of SGD (batch 256, "
    "momentum 0.9)",
    citation=_CITATION,
    care=_CARE,
    cost=_linear_probe_1ep_cost,
)
def linear_probe_1ep(features, labels, test_features, test_labels, *, seed=0) -> float:
    """`linear_probe` with epochs=1: the paper's "Linear (1 epoch)"."""
    return linear_probe(features, labels, test_features, test_labels, epochs=1, seed=seed)


@register(
    "linear_probe_5ep",
    needs=TRAIN_TEST,
    description="test accuracy of multinomial logistic regression after 5 epochs of SGD (batch 256, "
    "momentum 0.9)",
    citation=_CITATION,
    care=_CARE,
    cost=_linear_probe_5ep_cost,
)
def linear_probe_5ep(features, labels, test_features, test_labels, *, seed=0) -> float:
    """`linear_probe` with epochs=5: the paper's "Linear (5 epochs)"."""
    return linear_probe(features, labels, test_features, test_labels, epochs=5, seed=seed)


def _training_split(features, labels):
    x = as_features(features)
    codes, classes = encode_labels(labels, x.shape[0])
    require_classes(codes, "linear_probe")
    return x, codes, classes


def _test_split(test_features, test_labels, dim: int, classes: np.ndarray):
    test_x = as_features(test_features, "test_features")
    if test_x.shape[1] != dim:
        raise InputError(
            f"test_features: expected {dim} columns (the training feature dimension), got {test_x.shape[1]}"
        )
    own_codes, own_classes = encode_labels(test_labels, test_x.shape[0], "test_labels")
    lookup = {label: code for code, label in enumerate(classes.tolist())}
    mapping = np.array([lookup.get(label, -1) for label in own_classes.tolist()], dtype=np.int64)
    return test_x, mapping[own_codes]  # -1: a class never seen in training, never predicted


def _train_and_predict(x, codes, n_classes: int, test_x, epochs, seed: int) -> np.ndarray:
    """Standardise with training statistics, train, and return the predicted class codes of `test_x`."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    # A constant column is only centred, on its exact value: the rounded mean would leave a ~1e-17 spread
    # that standardisation would blow up.
    constant = (x == x[0]).all(axis=0)
    mean[constant] = x[0, constant]
    scale[constant] = 1.0
    x = (x - mean) / scale
    test_x = (test_x - mean) / scale
    if epochs is None:
        weights, bias = _fit_lbfgs(x, codes, n_classes)
    else:
        weights, bias = _fit_sgd(x, codes, n_classes, epochs, seed)
    return np.argmax(test_x @ weights + bias, axis=1)


def _fit_lbfgs(x: np.ndarray, codes: np.ndarray, n_classes: int):
    """Minimise mean cross-entropy + (L2 / 2) |W|^2 with L-BFGS; return W (D, C) and b (C,)."""
    n, dim = x.shape
    rows = np.arange(n)

    def loss_and_gradient(theta):
        weights = theta[: dim * n_classes].reshape(dim, n_classes)
        logits = x @ weights
        logits += theta[dim * n_classes :]
        logits -= logits.max(axis=1, keepdims=True)
        true = logits[rows, codes]
        np.exp(logits, out=logits)
        total = logits.sum(axis=1)
        flat_w = theta[: dim * n_classes]
        loss = np.mean(np.log(total) - true) + 0.5 * L2 * np.dot(flat_w, flat_w)
        logits /= total[:, None]  # probabilities
        logits[rows, codes] -= 1.0
        logits /= n
        grad_w = x.T @ logits
        grad_w += L2 * weights
        return loss, np.concatenate([grad_w.ravel(), logits.sum(axis=0)])

    result = scipy.optimize.minimize(
        loss_and_gradient,
        np.zeros(dim * n_classes + n_classes),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": MAX_ITER, "gtol": GTOL, "ftol": FTOL},
    )
    if result.status == 1:  # iteration limit
        warnings.warn(
            f"linear_probe: L-BFGS stopped at {MAX_ITER} iterations before converging (max |gradient| "
            f"{np.abs(result.jac).max():.2g} > {GTOL:g}); the accuracy is that of the last iterate",
            RuntimeWarning,
            stacklevel=3,
        )
    theta = result.x
    return theta[: dim * n_classes].reshape(dim, n_classes), theta[dim * n_classes :]


def _fit_sgd(x: np.ndarray, codes: np.ndarray, n_classes: int, epochs: int, seed: int):
    """`epochs` passes of momentum SGD on the mean cross-entropy from zero; return W (D, C) and b (C,)."""
    n, dim = x.shape
    rate = 2.0 / _curvature(x)  # 1 / L with L = lambda_max / 2
    weights = np.zeros((dim, n_classes))
    bias = np.zeros(n_classes)
    velocity_w = np.zeros_like(weights)
    velocity_b = np.zeros_like(bias)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            xb = x[batch]
            logits = xb @ weights + bias
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
            logits[np.arange(batch.size), codes[batch]] -= 1.0
            logits /= batch.size
            velocity_w *= MOMENTUM
            velocity_w += xb.T @ logits
            velocity_b *= MOMENTUM
            velocity_b += logits.sum(axis=0)
            weights -= rate * velocity_w
            bias -= rate * velocity_b
    return weights, bias


def _curvature(x: np.ndarray) -> float:
    """lambda_max([x, 1]^T [x, 1] / N) for column-centred x: max(lambda_max(x^T x / N), 1)."""
    n, dim = x.shape
    gram = np.dot(x.T, x) / n if dim <= n else np.dot(x, x.T) / n  # same non-zero spectrum
    top = top_eigenpairs(gram, 1, tol=1e-8, vectors=False)[0]  # Lanczos above 256: dense would cost seconds
    return max(float(top), 1.0)
