"""Mutual information I(features; labels) by the I_alpha variational lower bound (Poole et al., ICML 2019).

The paper's "MI (alpha=0.01)", "MI (alpha=0.50)" and "MI w/ PCA" rankers (Li et al., CVPR 2021, section 3.3):
a small critic network is trained to tighten the bound and the tightened bound, in nats, is the score.

The bound
---------
Write x for a feature vector and y for its label. For any q(x|y), I(X;Y) = E_p(x,y)[log p(x|y) / p(x)] is at
least E_p(x,y)[log q(x|y) / p(x)] (the gap is E_y KL(p(x|y) || q(x|y)) >= 0). With the energy-based choice
q(x|y) = p(x) e^f(x,y) / Z(y), Z(y) = E_p(x)[e^f(x,y)], and log Z <= Z / a + log a - 1 for any a(y) > 0:

    I(X;Y) >= 1 + E_p(x,y)[f(x,y) - log a(y)] - E_p(x)p(y)[e^f(x,y) / a(y)]                        (TUBA)

(a = e is NWJ). Extra samples x_2..x_K ~ p(x), independent of (x_1, y), carry no information about y, so
I(X_1;Y) = I(X_1..X_K; Y), and TUBA applied to (x_1..x_K, y) may use a baseline that looks at all of them.
I_alpha takes a(y; x_1..x_K) = alpha m(y) + (1 - alpha) q(y) with m(y) = 1/K sum_k e^f(x_k,y) and a learned
q(y) > 0:

    I_alpha = 1 + E_p(x_1,y)p(x_2..x_K)[log e^f(x_1,y) / a(y; x_1..x_K)]
                - E_p(x_1..x_K)p(y)[e^f(x_1,y) / a(y; x_1..x_K)]

alpha = 0 is TUBA (low bias, high variance); alpha = 1 is InfoNCE (the second term is exactly 1 by symmetry).
Since a >= alpha e^f(x_1,y) / K, the first term is at most log(K / alpha): the bound can never exceed
1 + log(K / alpha), so a large alpha caps (biases) the estimate and a small one lowers that bias at the price of
variance (the paper finds alpha = 0.01 ranks better than 0.5).

Minibatch estimate (as the authors' code): for a batch of K pairs (x_k, y_k), hold out pair j so that y_j is
independent of the K - 1 features x_{k != j}; every pair i != j is a joint sample and (x_i, y_j) a marginal one,
and every j takes its turn (m(y) then averages K - 1 samples):

    I_hat = 1 + 1/(K(K-1)) sum_j sum_{i != j} [ f(x_i,y_i) - log a(y_i; x_{!=j}) - e^f(x_i,y_j) / a(y_j; x_{!=j}) ]

Critic and estimate (neucrab's choices)
---------------------------------------
* Separable critic with a one-hot label embedding, normalised over labels: f(x, y) = log softmax(g(x))_y, g an
  MLP D -> 128 -> 128 -> C (ReLU). For a discrete label one-hot is the most expressive embedding (any function
  of (x, y) with finitely many y is some g(x)_y), and a batch's K x K score matrix costs K MLP passes instead
  of the K^2 of a concatenated critic MLP([x, e_y]). The log-softmax loses nothing at the optimum
  (f* = log p(y|x) + c(y), with c absorbed by the baseline) but keeps e^f <= 1, so an over-confident critic
  cannot blow up the marginal term exponentially. log q(y) is one learned scalar per class, started at the
  log class frequency (with the near-uniform initial critic the bound then starts at about 0).
* Features are centred and divided by their overall RMS (one scalar: the feature geometry is kept, and
  near-constant noise columns are not blown up as per-column standardisation would).
* Cross-fitted: the samples are split (seeded, at random) into two halves; a critic trained on one half
  is evaluated on the other, and the two held-out estimates are averaged. A critic scored on its own training
  data can memorise it and report up to H(Y) even for labels independent of the features; on held-out data
  the estimate is a lower bound of the true MI in expectation.
* Training: Adam (lr 3e-3) on random batches of `batch_size` (64, at most the fitting split), float32,
  maximising I_hat, for at most `steps` (500) steps and at most 50 passes over the fitting samples. A random
  quarter of the training half is kept aside: every 20 steps the critic is scored there, the best one is
  kept, and training stops after 5 checks without improvement (a critic that starts to memorise is stopped
  before it is penalised on new data).
* Evaluation: float64, the held-out half shuffled and cut into nearly equal batches of about `batch_size`; the
  estimate is the batch estimates' average weighted by batch size. Splits and batches are random, never sorted
  or stratified: the minibatch estimate assumes i.i.d. pairs, and batches of one class (a file listing sorted by
  class) or exactly balanced ones would bias the marginal term.
* All randomness comes from a local torch.Generator and numpy Generator seeded by `seed`: the same inputs and
  seed give the same value on the same machine, and the global random states are left as found.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import flops
from .._validate import as_features, check_count, check_fraction, check_number, check_seed, encode_labels
from ..errors import InputError
from ..threads import torch_threads
from .pca import pca
from .registry import FEATURES, register

STEPS = 500  # at most this many Adam steps per critic (two critics: one per half); early stopping may end sooner
BATCH_SIZE = 64  # K^2 work per step; caps the bound at 1 + log(63 / alpha) nats (9.7 at alpha = 0.01, 5.8 at 0.5)
MAX_EPOCHS = 50  # ... and at most this many passes over the fitting samples (small tasks stop sooner)
HIDDEN = 128  # width of the critic's two hidden layers
LEARNING_RATE = 3e-3
PCA_ENERGY = 0.8
EVAL_EVERY = 20  # steps between early-stopping checks
PATIENCE = 5  # checks without improvement before training stops
MONITOR_EVERY = 4  # a random quarter of each training half is kept aside for early stopping
MIN_SAMPLES = 16


# --------------------------------------------------------------------------------------------- critic
def _init_critic(d: int, codes: torch.Tensor, classes: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Parameters [W1, b1, W2, b2, W3, b3, log_q] with PyTorch's default Linear init U(+-1/sqrt(fan_in)),
    drawn from `generator` (nn.Linear would draw from the global RNG). log q(y) starts at the log class
    frequencies of `codes`: with the near-uniform initial log_softmax critic the bound then starts near 0."""
    params = []
    for fan_in, fan_out in ((d, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, classes)):
        bound = 1.0 / math.sqrt(fan_in)
        for shape in ((fan_out, fan_in), (fan_out,)):
            params.append((torch.rand(shape, generator=generator) * 2 - 1) * bound)
    counts = torch.bincount(codes, minlength=classes).float()
    params.append(torch.log(torch.clamp(counts, min=1.0) / codes.numel()))  # log q(y), learned
    return [p.requires_grad_() for p in params]


def _critic(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(K, C) critic values f(x_k, y) = log softmax(g(x_k))_y."""
    w1, b1, w2, b2, w3, b3 = params[:6]
    hidden = torch.relu(torch.nn.functional.linear(x, w1, b1))
    hidden = torch.relu(torch.nn.functional.linear(hidden, w2, b2))
    return torch.log_softmax(torch.nn.functional.linear(hidden, w3, b3), dim=1)


def _log_loo_mean(scores: torch.Tensor) -> torch.Tensor:
    """loo[i, j] = log( 1/(K-1) sum_{k != j} exp(scores[i, k]) ), exactly (no cancellation).

    With M_i the row maximum at column a_i: for j != a_i the sum keeps the maximum, so
    sum_{k != j} e^(s_ik - M_i) = T_i - e^(s_ij - M_i) >= 1 (T_i the full sum) is safe to form by subtraction;
    for j = a_i the row is summed again with column a_i masked out.
    """
    k = scores.shape[1]
    top, where = scores.max(dim=1, keepdim=True)
    shifted = torch.exp(scores - top)
    total = shifted.sum(dim=1, keepdim=True)
    # >= 1 in exact arithmetic for j != a_i; the clamp only removes rounding (and the unused j = a_i entry).
    kept = top + torch.log(torch.clamp(total - shifted, min=1.0))
    is_top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, where, True)
    without_top = torch.logsumexp(scores.masked_fill(is_top, -math.inf), dim=1, keepdim=True)
    return torch.where(is_top, without_top, kept) - math.log(k - 1)


def _bound(g: torch.Tensor, codes: torch.Tensor, log_q: torch.Tensor, alpha: float) -> torch.Tensor:
    """Minibatch I_alpha (module docstring) from critic outputs g (K, C) and the batch's label codes (K,)."""
    k = g.shape[0]
    scores = g[:, codes].T  # scores[i, j] = f(x_j, y_i): rows are labels, columns features
    loo = _log_loo_mean(scores)  # log m(y_i; x_{!= j})
    baseline = log_q[codes][:, None].expand(k, k)  # log q(y_i)
    if alpha == 1.0:
        log_a = loo
    elif alpha == 0.0:
        log_a = baseline
    else:
        log_a = torch.logaddexp(loo + math.log(alpha), baseline + math.log1p(-alpha))  # log a(y_i; x_{!= j})
    pairs = k * (k - 1)
    diagonal, diagonal_a = torch.diagonal(scores), torch.diagonal(log_a)
    # Sums over i != j as (sum over all) - (diagonal): cheaper than masking a K x K matrix.
    joint = ((k - 1) * diagonal.sum() - (log_a.sum() - diagonal_a.sum())) / pairs  # f(x_i,y_i) - log a(y_i; x_{!=j})
    ratio = torch.exp(scores - diagonal_a[:, None])  # e^f(x_j, y_i) / a(y_i; x_{!=i})
    marginal = (ratio.sum() - torch.diagonal(ratio).sum()) / pairs
    return 1.0 + joint - marginal


class _Adam:
    """Adam (Kingma and Ba 2015; PyTorch's defaults betas (0.9, 0.999), eps 1e-8, no weight decay). Written out
    because torch.optim's first step imports torch._dynamo, which costs seconds per process."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**self.t)
        root_correction = math.sqrt(1 - beta2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if g is None:  # a parameter the loss does not use
                continue
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.addcdiv_(m, v.sqrt().div_(root_correction).add_(self.eps), value=-step_size)


def _train(x: torch.Tensor, codes: torch.Tensor, monitor: tuple[torch.Tensor, torch.Tensor], classes: int,
           alpha: float, steps: int, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Adam on random batches of the fitting samples, stopped early on the bound of the `monitor` samples.

    Every EVAL_EVERY steps the critic is scored on the monitor samples; the best critic so far is kept, and
    training stops after PATIENCE evaluations without improvement (or after `steps` steps).
    """
    params = _init_critic(x.shape[1], codes, classes, generator)
    optimiser = _Adam(params, LEARNING_RATE)
    n = x.shape[0]
    best_value, best, waited = _mean_bound(params, *monitor, alpha, batch), [p.detach().clone() for p in params], 0
    for step in range(1, steps + 1):
        chosen = torch.randperm(n, generator=generator)[:batch]
        loss = -_bound(_critic(params, x[chosen]), codes[chosen], params[6], alpha)
        optimiser.step(torch.autograd.grad(loss, params, allow_unused=True))  # log q is unused when alpha = 1
        if step % EVAL_EVERY == 0 or step == steps:
            value = _mean_bound(params, *monitor, alpha, batch)
            if value > best_value:
                best_value, best, waited = value, [p.detach().clone() for p in params], 0
            else:
                waited += 1
                if waited >= PATIENCE:
                    break
    return best


def _batch_bounds(params, x: torch.Tensor, codes: torch.Tensor, alpha: float, batch: int) -> list[tuple[float, int]]:
    """(I_hat, batch size) over all of `x`, cut into nearly equal consecutive batches of about `batch` (one batch
    when `x` has fewer rows)."""
    pieces = np.array_split(np.arange(x.shape[0]), max(1, x.shape[0] // batch))
    with torch.no_grad():
        g = _critic(params, x)
        return [(float(_bound(g[rows], codes[rows], params[6], alpha)), rows.size) for rows in pieces]


def _mean_bound(params, x, codes, alpha: float, batch: int) -> float:
    values, sizes = np.array(_batch_bounds(params, x, codes, alpha, batch)).T
    return float(np.average(values, weights=sizes))


# ----------------------------------------------------------------------------------------- inputs
def _reduce(x: np.ndarray, energy: float) -> np.ndarray:
    """Scores on the fewest principal axes whose explained variance ratio exceeds `energy` (scikit-learn's
    PCA(energy) choice), no whitening; numpy's full eigh and the eigenvectors' own signs, as MI has always
    used (the critic's training sees the signs). Constant features: one zero column."""
    reduced = pca(x, energy=energy, solver="full", signs=False)
    return reduced if reduced.shape[1] else np.zeros((x.shape[0], 1))


def _split(n: int, rng: np.random.Generator, every: int) -> np.ndarray:
    """A random mask selecting ceil(n / every) of n samples.

    Deliberately not class-stratified: a random subset of an i.i.d. sample is an i.i.d. sample, which the
    minibatch bound needs. Exactly balanced subsets hold fewer same-class pairs (i != j) than i.i.d. draws, which
    lowers the marginal term and lifts the estimate above the true MI by about (C - 1) / (K - 1).
    """
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[::every]] = True
    return mask


# --------------------------------------------------------------------------------------- measure
def _estimate(features, labels, *, alpha, pca, pca_energy, steps, seed, batch_size):
    """Validate, then return the per-batch held-out estimates [(I_hat, batch size), ...] of both halves."""
    x = as_features(features)
    codes, _ = encode_labels(labels, x.shape[0])
    alpha = check_number(alpha, "alpha", 0.0, 1.0)
    pca_energy = check_fraction(pca_energy, "pca_energy")
    steps = check_count(steps, "steps")
    seed = check_seed(seed)
    batch_size = check_count(batch_size, "batch_size", minimum=2)
    classes = int(codes.max()) + 1
    if classes == 1:
        return [(0.0, x.shape[0])]  # a constant label carries no information: I = 0 exactly
    if x.shape[0] < MIN_SAMPLES:
        raise InputError(
            f"features: mutual information needs at least {MIN_SAMPLES} samples (two halves, each split into "
            f"fitting and early-stopping samples), got {x.shape[0]}"
        )
    if pca:
        x = _reduce(x, pca_energy)
    x = x - x.mean(axis=0)
    rms = math.sqrt(float(np.mean(x**2)))
    if rms > 0:
        x = x / rms
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    first = _split(codes.size, rng, 2)
    results = []
    one, other = np.flatnonzero(first), np.flatnonzero(~first)
    for train, test in ((one, other), (other, one)):
        watch = _split(train.size, rng, MONITOR_EVERY)
        # Shuffled: batches are cut from consecutive rows, and the minibatch bound assumes i.i.d. pairs.
        fit, monitor, test = rng.permutation(train[~watch]), rng.permutation(train[watch]), rng.permutation(test)
        batch = min(batch_size, fit.size)
        budget = min(steps, math.ceil(MAX_EPOCHS * fit.size / batch))
        fit_x, fit_y, watch_x, watch_y = (torch.from_numpy(a[rows]) for rows in (fit, monitor) for a in (x, codes))
        params = _train(fit_x.float(), fit_y, (watch_x.float(), watch_y), classes, alpha, budget, batch, generator)
        params = [p.double() for p in params]  # evaluate in float64
        results += _batch_bounds(params, torch.from_numpy(x[test]), torch.from_numpy(codes[test]), alpha, batch)
    return results


def mutual_information(features, labels, *, alpha=0.01, pca=False, pca_energy=PCA_ENERGY, steps=STEPS, seed=0,
                       batch_size=BATCH_SIZE) -> float:
    """I_alpha lower-bound estimate of I(features; labels) in nats (module docstring); higher is better.

    Parameters
    ----------
    features : array (N, D), N >= 16, any float dtype.
    labels : N labels of any hashable kind (remapped to 0..C-1).
    alpha : float in [0, 1]
        0 is the TUBA bound with a learned baseline, 1 InfoNCE; the paper uses 0.01 and 0.5.
    pca : bool
        First project the features on the principal axes keeping `pca_energy` of the variance (no whitening).
    pca_energy : float in (0, 1]
    steps : int >= 1
        At most this many Adam steps for each of the two critics (also at most 50 epochs; early stopping
        may end training sooner).
    seed : int in [0, 2**32)
        Seeds the split, the critic's initialisation and the batches.
    batch_size : int >= 2

    Returns
    -------
    float
        The mean of the two held-out I_alpha estimates. For a balanced C-class label it lies below
        H(Y) = log C up to estimation noise; about 0 (slightly below) for labels independent of the features.
        A single class gives exactly 0.0.
    """
    # One torch thread: the critic's batches are too small to gain from more, and on a busy machine thread
    # hand-offs made training several times slower.
    with torch_threads(1):
        results = _estimate(features, labels, alpha=alpha, pca=pca, pca_energy=pca_energy, steps=steps, seed=seed,
                            batch_size=batch_size)
    values, sizes = np.array(results).T
    return float(np.average(values, weights=sizes))


# ------------------------------------------------------------------------------------------- cost
def mi_plan(n: int, steps: int | None = None) -> list[dict]:
    """For each of the two critics: fit/monitor/test sizes, batch, step budget and the number of early-stopping
    checks when training runs to its budget (the splits of `_estimate`)."""
    steps = STEPS if steps is None else steps
    plan = []
    for train, test in ((math.ceil(n / 2), n // 2), (n // 2, math.ceil(n / 2))):
        monitor = math.ceil(train / MONITOR_EVERY)
        fit = train - monitor
        batch = min(BATCH_SIZE, fit)
        budget = min(steps, math.ceil(MAX_EPOCHS * fit / batch))
        checks = math.ceil(budget / EVAL_EVERY)
        plan.append(dict(fit=fit, monitor=monitor, test=test, batch=batch, steps=budget, checks=checks))
    return plan


def mi_gemm_flops(n: int, p: int, c: int, steps: int | None = None) -> float:
    """The matrix products of the critic (D=p -> H -> H -> C) over both critics, exactly as torch runs them
    when training reaches its budget: per step a forward pass, the weight gradients of the three layers and
    the input gradients of the last two (none for the data); forward passes on the monitor samples (at the
    start and at every check) and on the held-out half."""
    h = HIDDEN
    layers = p * h + h * h + h * c  # multiply-adds of one sample through the MLP
    total = 0.0
    for part in mi_plan(n, steps):
        step = 2.0 * part["batch"] * (layers + layers + h * h + h * c)
        total += part["steps"] * step + 2.0 * layers * (part["monitor"] * (1 + part["checks"]) + part["test"])
    return total


def _elementwise_flops(n: int, c: int, steps: int | None) -> float:
    """The rest of training, approximately: per step the K x K bound (~20 operations per entry, three times
    that with its gradient), log-softmax and ReLUs (~12 per output and hidden unit), Adam (~12 per parameter)."""
    total = 0.0
    for part in mi_plan(n, steps):
        k = part["batch"]
        total += part["steps"] * (60.0 * k * k + 12.0 * k * (c + 2 * HIDDEN))
        evaluated = part["monitor"] * (1 + part["checks"]) + part["test"]
        total += 20.0 * k * evaluated + 12.0 * evaluated * (c + 2 * HIDDEN)
    return total


def _cost(n, d, c, with_pca: bool, reduced_dims, steps):
    p = (min(n, d) if reduced_dims is None else reduced_dims) if with_pca else d  # the critic's input dimension
    parameters = (p + 1) * HIDDEN + (HIDDEN + 1) * HIDDEN + (HIDDEN + 1) * c + c
    adam = 12.0 * parameters * sum(part["steps"] for part in mi_plan(n, steps))
    reduce = flops.pca(n, d, p, scores_from_gram=True) if with_pca else 0.0
    scale = 3.0 * n * p  # centring and one RMS
    return reduce + scale + mi_gemm_flops(n, p, c, steps) + _elementwise_flops(n, c, steps) + adam


def _mi_cost(n, d, c, sources, test_n, *, steps=None):
    return _cost(n, d, c, False, None, steps)


def _mi_pca_cost(n, d, c, sources, test_n, *, steps=None, reduced_dims=None):
    return _cost(n, d, c, True, reduced_dims, steps)


# ------------------------------------------------------------------------------------- registered
_CITATION = "Poole et al., On Variational Bounds of Mutual Information, ICML 2019; Li et al., CVPR 2021, section 3.3"
_CARE = (
    "critic cross-fitted on two random halves, early-stopped, and evaluated on the held-out half (an in-sample "
    "estimate can reach H(Y) by memorising); seeded local generators (global RNG untouched); exact "
    "leave-one-out log-mean-exp; features centred and scaled by one RMS"
)


@register("mi", needs=FEATURES, citation=_CITATION, care=_CARE, cost=_mi_cost,
          description="I_alpha (alpha=0.01) lower bound on I(features; labels) in nats, separable MLP critic")
def mi(features, labels, *, seed=0) -> float:
    """`mutual_information` with alpha = 0.01: the paper's "MI (alpha=0.01)"."""
    return mutual_information(features, labels, alpha=0.01, seed=seed)


@register("mi_alpha0.5", needs=FEATURES, citation=_CITATION, care=_CARE, cost=_mi_cost,
          description="I_alpha (alpha=0.5) lower bound on I(features; labels) in nats, separable MLP critic")
def mi_alpha05(features, labels, *, seed=0) -> float:
    """`mutual_information` with alpha = 0.5: the paper's "MI (alpha=0.50)"."""
    return mutual_information(features, labels, alpha=0.5, seed=seed)


@register("mi_pca", needs=FEATURES, citation=_CITATION, care=_CARE, cost=_mi_pca_cost,
          description="I_alpha (alpha=0.01) lower bound on I(features; labels) after PCA to 80% of the variance")
def mi_pca(features, labels, *, seed=0) -> float:
    """`mutual_information` with alpha = 0.01 after PCA (80% energy): the paper's "MI w/ PCA (alpha=0.01)"."""
    return mutual_information(features, labels, alpha=0.01, pca=True, seed=seed)


@register("mi_pca_alpha0.5", needs=FEATURES, citation=_CITATION, care=_CARE, cost=_mi_pca_cost,
          description="I_alpha (alpha=0.5) lower bound on I(features; labels) after PCA to 80% of the variance")
def mi_pca_alpha05(features, labels, *, seed=0) -> float:
    """`mutual_information` with alpha = 0.5 after PCA (80% energy): the paper's "MI w/ PCA (alpha=0.50)"."""
    return mutual_information(features, labels, alpha=0.5, pca=True, seed=seed)
