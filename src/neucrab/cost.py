"""What each measure costs, in floating-point operations (FLOPs), as the paper's GFLOPS columns report it.

`measure_cost(name, n, d, classes)` counts the arithmetic of the measure as neucrab computes it, from short
formulas (one per registered measure, next to the code they count). The shared forward pass that produces the
features is counted separately (`forward_flops`), as the paper's tables do. Parts that run in torch can also be
counted exactly by running them (`count_torch_flops`, torch's FlopCounterMode, which counts matrix products).

Conventions (Golub and Van Loan, "Matrix Computations"; one multiply-add = 2 FLOPs):
- product of (m, k) and (k, n) matrices: 2 m k n;
- symmetric eigendecomposition with eigenvectors ~ 9 s^3; eigenvalues only (tridiagonal reduction) ~ 4/3 s^3;
  k leading eigenpairs by LAPACK subset ~ 4/3 s^3 + 2 s^2 k; Cholesky s^3 / 3; triangular inverse s^3 / 3;
  Householder QR of an (m, n) matrix with Q formed ~ 4 m n^2 - 4/3 n^3;
- Lanczos (ARPACK) for k eigenpairs of an s x s matrix: ncv = max(2k + 1, 20) basis vectors, counted as three
  sweeps of ncv matrix-vector products (2 s^2 each) and their re-orthogonalisation (4 s ncv each);
- an elementwise operation, exp or log, and a comparison in a sort or top-k: 1 each (sorting m keys: m log2 m).
Iterative measures stop when they converge; unless told the count (keyword `details` below) the formulas use
their iteration caps, so the number is an upper bound. Data-dependent sizes (the dimension PCA keeps) default to
their largest possible value for the same reason. Class sizes are taken as balanced (n / C each).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .errors import InputError


# ------------------------------------------------------------------------------- building blocks
def gemm(m: float, k: float, n: float) -> float:
    """FLOPs of an (m, k) @ (k, n) product."""
    return 2.0 * m * k * n


def eigh(s: float) -> float:
    """Symmetric eigendecomposition with eigenvectors."""
    return 9.0 * s**3


def eigvalsh(s: float) -> float:
    """Symmetric eigenvalues only (the tridiagonal reduction dominates)."""
    return 4.0 / 3.0 * s**3


def cholesky(s: float) -> float:
    return s**3 / 3.0


def qr(m: float, n: float) -> float:
    """Householder QR of an (m, n) matrix, m >= n, with the (m, n) Q formed explicitly."""
    return 4.0 * m * n**2 - 4.0 / 3.0 * n**3


def top_eigenpairs(s: float, k: float, dense: bool) -> float:
    """k leading eigenpairs of an s x s symmetric matrix: LAPACK subset (dense) or Lanczos."""
    if dense:
        return eigvalsh(s) + 2.0 * s**2 * k
    ncv = max(2 * k + 1, 20)
    return 3.0 * ncv * (2.0 * s**2 + 4.0 * s * ncv)


def sort(m: float) -> float:
    return m * math.log2(max(m, 2.0))


def _pca(n: float, d: float, kept: float, scores_from_gram: bool = False) -> float:
    """Centring, scatter or Gram matrix, full eigendecomposition, projection onto `kept` axes: the (D, D)
    scatter when D <= N, else the (N, N) Gram matrix, whose eigenvectors give the scores directly
    (`scores_from_gram`, as the MI measure) or the axes first (X^T U, as N-LEEP)."""
    if d <= n:
        return n * d + gemm(d, n, d) + eigh(d) + gemm(n, d, kept)
    scores = n * kept if scores_from_gram else gemm(d, n, kept) + gemm(n, d, kept)
    return n * d + gemm(n, d, n) + eigh(n) + scores


# ---------------------------------------------------------------------------------------- registry
CostFormula = Callable[..., float]
COST_FORMULAS: dict[str, CostFormula] = {}


def cost_formula(*names: str):
    """Decorator registering a formula f(n, d, c, sources, test_n, **details) -> FLOPs for measure `names`."""

    def decorate(function: CostFormula) -> CostFormula:
        for name in names:
            COST_FORMULAS[name] = function
        return function

    return decorate


def measure_cost(name: str, n: int, d: int, classes: int, *, sources: int | None = None,
                 test_n: int | None = None, **details) -> float:
    """FLOPs of measure `name` on n training samples of dimension d with `classes` classes.

    `sources` (source classes of the head) is needed by leep and nce; `test_n` (test samples) by the linear
    probes (default n). `details` are measure-specific counts that the measure's own run knows: iteration counts
    (`iterations`, `kmeans_iterations`), the dimension PCA kept (`reduced_dims`), the MI critic's `steps`; see
    each formula. Without them the formulas use caps (an upper bound). Excludes the shared forward pass.
    """
    from .measures import REGISTRY

    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise InputError(f"measure_cost: unknown measure {name!r}; expected one of: {known}")
    if name not in COST_FORMULAS:
        raise InputError(f"measure_cost: no cost formula for measure {name!r}; add one in neucrab/cost.py")
    for label, value in (("n", n), ("d", d), ("classes", classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"measure_cost: {label} must be a positive integer, got {value!r}")
    test_n = n if test_n is None else test_n
    try:
        return float(COST_FORMULAS[name](n, d, classes, sources, test_n, **details))
    except TypeError as error:
        raise InputError(f"measure_cost: {name}: {error}") from None


def _need_sources(name: str, sources) -> int:
    if sources is None or isinstance(sources, bool) or not isinstance(sources, int) or sources < 1:
        raise InputError(f"measure_cost: {name} needs sources=the number of source classes, got {sources!r}")
    return sources


# ------------------------------------------------------------------------------------ formulas
@cost_formula("leep")
def _leep(n, d, c, sources, test_n):
    s = _need_sources("leep", sources)
    # rows checked and renormalised (2 N S); joint P(y, z) as a sparse one-hot product (2 N S); P(z), P(y|z)
    # (2 C S); sum_z P(y_j|z) theta_jz (2 N S); log and mean (2 N).
    return 6.0 * n * s + 2.0 * c * s + 2.0 * n


@cost_formula("nce")
def _nce(n, d, c, sources, test_n):
    s = _need_sources("nce", sources)
    # rows checked and renormalised (2 N S); argmax over sources (N S); sort the (y, z) pair codes; entropy
    # of the observed pairs (at most N terms, 4 each).
    return 3.0 * n * s + sort(n) + 4.0 * n


@cost_formula("nleep")
def _nleep(n, d, c, sources, test_n, *, reduced_dims=None, iterations=100, kmeans_iterations=300,
           components_per_class=5):
    k = min(n, d) if reduced_dims is None else reduced_dims  # dimension kept by PCA (80% of the variance)
    m = components_per_class * c  # mixture components
    t = k * (k + 1) / 2 + k  # quadratic features [x_i x_j (i <= j), x]: one E-step GEMM column each
    kmeans = kmeans_iterations * (gemm(n, k, m) + 3.0 * n * m)  # distances, argmin, centres
    e_step = n * t + gemm(n, t, m) + 4.0 * n * m  # features, log-densities, log-sum-exp
    # M-step on the sparse posteriors (~1 component per sample): means and scatter 2 N k^2; precisions from
    # a Cholesky factor, its inverse and L^-T L^-1 per component.
    m_step = 2.0 * n * k + gemm(n, k, k) + m * (cholesky(k) + cholesky(k) + gemm(k, k, k))
    leep = 4.0 * n * m + 2.0 * c * m + 2.0 * n  # LEEP on the (N, K) posteriors
    return _pca(n, d, k) + kmeans + m_step + iterations * (e_step + m_step) + e_step + leep


@cost_formula("logme")
def _logme(n, d, c, sources, test_n, *, iterations=10_000):
    r = min(n, d)
    if n > d:  # eigh of F^T F; F^T Y (class sums) and its rotation into the eigenbasis
        spectrum = gemm(d, n, d) + eigh(d) + n * d + gemm(c, d, d)
    else:  # eigh of F F^T; U^T Y (class sums)
        spectrum = gemm(n, d, n) + eigh(n) + n * n
    # fixed point per class column and iteration: ||m||^2, residual, gamma, updates ~15 operations per
    # singular value; the final evidence ~20.
    return spectrum + c * r * (15.0 * iterations + 20.0)


def _class_spectrum(n, d, c):
    """H-score's centring, class means and eigenbasis of the centred scatter (or Gram) matrix."""
    if d <= n:
        return 2.0 * n * d + gemm(d, n, d) + eigh(d) + gemm(c, d, d)
    return 2.0 * n * d + gemm(n, d, n) + eigh(n) + n * n + c * d


@cost_formula("hscore")
def _hscore(n, d, c, sources, test_n):
    return _class_spectrum(n, d, c) + 3.0 * c * min(n, d)  # sum of squared coordinates / eigenvalues


@cost_formula("shrinkage_hscore")
def _shrinkage_hscore(n, d, c, sources, test_n):
    ledoit_wolf = 3.0 * n * d + 6.0 * min(n, d)  # sum_i ||x_i||^4 and the spectrum's moments
    return _class_spectrum(n, d, c) + ledoit_wolf + 4.0 * c * min(n, d)


@cost_formula("gbc")
def _gbc(n, d, c, sources, test_n, *, dims=64):
    k = min(dims, d, n - 1)
    s = min(n, d)
    pca = n * d + (gemm(d, n, d) if d <= n else gemm(n, d, n)) + top_eigenpairs(s, k, dense=True)
    pca += gemm(n, d, k) if d <= n else n * k
    statistics = 4.0 * n * k  # class means and variances
    bhattacharyya = c * c * (10.0 * k + 1.0)  # distance over k dimensions (logs, ratios) and exp, per pair
    return pca + statistics + bhattacharyya


@cost_formula("transrate")
def _transrate(n, d, c, sources, test_n):
    def coding_rate(rows):
        s = min(rows, d)
        return gemm(s, max(rows, d), s) + s * s + cholesky(s) + s  # Gram, scale, Cholesky, log-diagonal

    return n * d + coding_rate(n) + c * coding_rate(n / c)


def _knn_blocks(n: int, block: int = 2048) -> float:
    """Sum over the upper-triangle blocks (I, J >= I) of |I| |J|: the rows of knn's float32 GEMMs."""
    sizes = [min(block, n - start) for start in range(0, n, block)]
    return sum(sizes[i] * sizes[j] for i in range(len(sizes)) for j in range(i, len(sizes)))


@cost_formula("knn")
def _knn(n, d, c, sources, test_n, *, k=1):
    width = -(-(d + 2) // 8) * 8  # augmented rows [x, |x|^2, 1], padded to a multiple of 8
    # hashing rows, centring and norms; blocked float32 GEMM over the upper triangle; candidate selection
    # (one comparison per distance, twice for off-diagonal blocks); votes.
    return 4.0 * n * d + gemm(1, width, _knn_blocks(n)) + 2.0 * n * n + n * (k + 17)


@cost_formula("parc")
def _parc(n, d, c, sources, test_n, *, dims=32, max_samples=4000):
    m = min(n, max_samples)  # probe set
    s = min(m, d)
    k = min(dims, s)
    pca = m * d + (gemm(d, m, d) if d <= m else gemm(m, d, m) + gemm(d, m, k))
    pca += top_eigenpairs(s, k, dense=s <= 256 or k >= s // 4) + gemm(m, d, k) + 2.0 * m * k
    pairs = m * (m - 1) / 2
    # row-centred unit scores; 1 - correlation for every pair (upper-triangle blocks); same-class flags;
    # two sorts for the rank-sum and the searches.
    return pca + 4.0 * m * k + gemm(1, k, pairs) + pairs + sort(pairs) + 2.0 * pairs


@cost_formula("sfda")
def _sfda(n, d, c, sources, test_n):
    s = min(n, d)
    rotate = qr(d, n) + gemm(n, d, n) if d > n else 0.0  # D > N: solved in the span of the rows
    largest = top_eigenpairs(s, 1, dense=s <= 256)

    def fit(rows):  # means, within-class scatter, regularised Cholesky solve, class scores, softmax
        return 2.0 * rows * s + gemm(s, rows, s) + cholesky(s) + 2.0 * c * s * s + gemm(n, s, c) + 4.0 * n * c

    mix = 3.0 * n * s + 2.0 * c * s
    return n * d + rotate + largest + 2.0 * fit(n) + mix


def _standardise(n, d, test_n):
    return 4.0 * n * d + 2.0 * test_n * d


@cost_formula("linear_probe")
def _linear_probe(n, d, c, sources, test_n, *, iterations=1000, history=10):
    p = (d + 1) * c
    # one loss-and-gradient evaluation per L-BFGS iteration: logits and gradient GEMMs, softmax; the
    # two-loop recursion over `history` pairs (~8 history p); prediction on the test split.
    evaluation = gemm(n, d, c) + gemm(d, n, c) + 6.0 * n * c + 4.0 * p
    return _standardise(n, d, test_n) + iterations * (evaluation + 8.0 * history * p) + gemm(test_n, d, c)


def _sgd_probe(n, d, c, test_n, epochs, batch=256):
    s = min(n, d)
    curvature = (gemm(d, n, d) if d <= n else gemm(n, d, n)) + top_eigenpairs(s, 1, dense=s <= 256)
    per_epoch = gemm(n, d, c) + gemm(d, n, c) + 6.0 * n * c + math.ceil(n / batch) * 6.0 * (d + 1) * c
    return _standardise(n, d, test_n) + curvature + epochs * per_epoch + gemm(test_n, d, c)


@cost_formula("linear_probe_1ep")
def _linear_probe_1ep(n, d, c, sources, test_n):
    return _sgd_probe(n, d, c, test_n, epochs=1)


@cost_formula("linear_probe_5ep")
def _linear_probe_5ep(n, d, c, sources, test_n):
    return _sgd_probe(n, d, c, test_n, epochs=5)


# ---------------------------------------------------------------------------- mutual information
def mi_plan(n: int, steps: int | None = None) -> list[dict]:
    """For each of the MI measure's two critics: fit/monitor/test sizes, batch, step budget and the number of
    early-stopping checks when training runs to its budget (the splits of neucrab.measures.mi)."""
    from .measures import mi

    steps = mi.STEPS if steps is None else steps
    plan = []
    for train, test in ((math.ceil(n / 2), n // 2), (n // 2, math.ceil(n / 2))):
        monitor = math.ceil(train / mi.MONITOR_EVERY)
        fit = train - monitor
        batch = min(mi.BATCH_SIZE, fit)
        budget = min(steps, math.ceil(mi.MAX_EPOCHS * fit / batch))
        checks = math.ceil(budget / mi.EVAL_EVERY)
        plan.append(dict(fit=fit, monitor=monitor, test=test, batch=batch, steps=budget, checks=checks))
    return plan


def mi_gemm_flops(n: int, p: int, c: int, steps: int | None = None) -> float:
    """The matrix products of the MI critic (D=p -> H -> H -> C) over both critics, exactly as torch runs them
    when training reaches its budget: per step a forward pass, the weight gradients of the three layers and
    the input gradients of the last two (none for the data); forward passes on the monitor samples (at the
    start and at every check) and on the held-out half."""
    from .measures import mi

    h = mi.HIDDEN
    layers = p * h + h * h + h * c  # multiply-adds of one sample through the MLP
    total = 0.0
    for part in mi_plan(n, steps):
        step = 2.0 * part["batch"] * (layers + layers + h * h + h * c)
        total += part["steps"] * step + 2.0 * layers * (part["monitor"] * (1 + part["checks"]) + part["test"])
    return total


def _mi_elementwise(n: int, c: int, steps: int | None) -> float:
    """The rest of MI training, approximately: per step the K x K bound (~20 operations per entry, three times
    that with its gradient), log-softmax and ReLUs (~12 per output and hidden unit), Adam (~12 per parameter)."""
    from .measures import mi

    total = 0.0
    for part in mi_plan(n, steps):
        k = part["batch"]
        total += part["steps"] * (60.0 * k * k + 12.0 * k * (c + 2 * mi.HIDDEN))
        evaluated = part["monitor"] * (1 + part["checks"]) + part["test"]
        total += 20.0 * k * evaluated + 12.0 * evaluated * (c + 2 * mi.HIDDEN)
    return total


def _mi_cost(n, d, c, pca: bool, reduced_dims, steps):
    from .measures import mi

    p = (min(n, d) if reduced_dims is None else reduced_dims) if pca else d  # the critic's input dimension
    parameters = (p + 1) * mi.HIDDEN + (mi.HIDDEN + 1) * mi.HIDDEN + (mi.HIDDEN + 1) * c + c
    adam = 12.0 * parameters * sum(part["steps"] for part in mi_plan(n, steps))
    reduce = _pca(n, d, p, scores_from_gram=True) if pca else 0.0
    scale = 3.0 * n * p  # centring and one RMS
    return reduce + scale + mi_gemm_flops(n, p, c, steps) + _mi_elementwise(n, c, steps) + adam


@cost_formula("mi", "mi_alpha0.5")
def _mi(n, d, c, sources, test_n, *, steps=None):
    return _mi_cost(n, d, c, False, None, steps)


@cost_formula("mi_pca", "mi_pca_alpha0.5")
def _mi_pca(n, d, c, sources, test_n, *, steps=None, reduced_dims=None):
    return _mi_cost(n, d, c, True, reduced_dims, steps)


# ----------------------------------------------------------------------------- fine-tuning and torch
def finetune_cost(n: int, forward_per_sample: float, epochs: float, test_n: int) -> float:
    """Fine-tuning the whole network for `epochs` epochs and testing it: a backward pass costs about twice a
    forward pass (a gradient for the activations and one for the weights), so 3 forward passes per training
    sample per epoch, and one per test sample. `forward_per_sample` from `forward_flops(module, x) / len(x)`."""
    return 3.0 * epochs * n * forward_per_sample + test_n * forward_per_sample


def _early_finetune(name, n, d, c, test_n, forward, epochs):
    from .measures.finetune_measures import EARLY_BATCH_SIZE

    if forward is None or isinstance(forward, bool) or not isinstance(forward, (int, float)) or forward <= 0:
        raise InputError(f"measure_cost: {name} needs forward=FLOPs of one sample's forward pass (forward_flops)")
    steps = math.ceil(epochs * n / EARLY_BATCH_SIZE)  # full batches of 32, as neucrab.finetune runs them
    per_sample = forward + gemm(1, d, c)  # the network and its new linear head
    return finetune_cost(steps * EARLY_BATCH_SIZE, per_sample, 1, test_n)


@cost_formula("finetune_1ep")
def _finetune_1ep(n, d, c, sources, test_n, *, forward=None):
    return _early_finetune("finetune_1ep", n, d, c, test_n, forward, epochs=1)


@cost_formula("finetune_5ep")
def _finetune_5ep(n, d, c, sources, test_n, *, forward=None):
    return _early_finetune("finetune_5ep", n, d, c, test_n, forward, epochs=5)


def count_torch_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs that torch's FlopCounterMode counts while `fn(*args, **kwargs)` runs: matrix products and
    convolutions (forward and backward), not elementwise work or anything computed in numpy."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def forward_flops(module, example_input) -> int:
    """FLOPs of one forward pass of `module` on `example_input` (a tensor or a tuple of tensors), without
    gradients. Divide by the batch size for a per-sample figure. The module's train/eval mode is left as found."""
    import torch

    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    training = getattr(module, "training", False)
    try:
        if hasattr(module, "eval"):
            module.eval()
        with torch.no_grad():
            return count_torch_flops(module, *inputs)
    finally:
        if hasattr(module, "train"):
            module.train(training)
