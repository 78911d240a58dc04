"""What each measure costs, in floating-point operations (FLOPs), as the paper's GFLOPS columns report it.

`measure_cost(name, n, d, classes)` counts the arithmetic of the measure as neucrab computes it, from the short
formula each measure registers next to its code (`register(..., cost=...)`, built from `neucrab.flops`). The
shared forward pass that produces the features is counted separately (`forward_flops`), as the paper's tables
do. Parts that run in torch can also be counted exactly by running them (`count_torch_flops`, torch's
FlopCounterMode, which counts matrix products). The conventions are in `neucrab.flops`.
"""

from __future__ import annotations

from collections.abc import Callable

from ._validate import check_count
from .errors import InputError
from .flops import finetune_cost, gemm  # noqa: F401  (re-exported: part of this module's interface)
from .measures import REGISTRY
from .measures.ialpha import mi_gemm_flops, mi_plan  # noqa: F401  (re-exported, as above)


def measure_cost(name: str, n: int, d: int, classes: int, *, sources: int | None = None,
                 test_n: int | None = None, **details) -> float:
    """FLOPs of measure `name` on n training samples of dimension d with `classes` classes.

    `sources` (source classes of the head) is needed by leep and nce; `test_n` (test samples) by the linear
    probes (default n); `forward` (FLOPs of one sample's forward pass) by the fine-tuning measures. `details`
    are measure-specific counts that the measure's own run knows: iteration counts (`iterations`,
    `kmeans_iterations`), the dimension PCA kept (`reduced_dims`), the MI critic's `steps`; see each formula.
    Without them the formulas use caps (an upper bound). Excludes the shared forward pass.
    """
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise InputError(f"measure_cost: unknown measure {name!r}; expected one of: {known}")
    formula = REGISTRY[name].cost
    if formula is None:
        raise InputError(f"measure_cost: no cost formula for measure {name!r}; give its @register a cost=")
    n, d, classes = (check_count(value, label) for label, value in (("n", n), ("d", d), ("classes", classes)))
    test_n = n if test_n is None else test_n
    try:
        return float(formula(n, d, classes, sources, test_n, **details))
    except TypeError as error:
        raise InputError(f"measure_cost: {name}: {error}") from None


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
