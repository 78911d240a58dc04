"""Early-stopped fine-tuning as ranking measures: the paper's "Fine-tune (1 epoch)" and "Fine-tune (5 epochs)"
(Li et al., CVPR 2021, section 3.1): the test accuracy of the premature fine-tuned network is the score.

They run neucrab's one fine-tuning loop (`neucrab.finetune`: head replaced by a zero-initialised linear
classifier, whole network trained by SGD with momentum 0.9, no weight decay, no augmentation, constant
learning rate, seeded data order) for 1 or 5 epochs (an epoch is ceil(N / batch) steps) at a fixed learning
rate of 0.01 and batch 32. The paper does not state its early-stopping settings. Batch 32 rather than G's 512
because one epoch of batch 512 on a task of a few thousand images is a handful of steps, which would score the
zero-initialised head more than the checkpoint; 0.01 is the middle of G's learning-rate grid, a common
fine-tuning rate for SGD with momentum at that batch size.

Unlike the array measures these need the network itself (`needs=MODEL`): they are called as
`measure(checkpoint, task, **options)` with a loaded PyTorch checkpoint and a loaded Task (specs are loaded
too). Results go through the ground truth's run cache (same key: checkpoint, task, lr, steps, batch, image
size, seed), so a repeated ranking does not train again.
"""

from __future__ import annotations

import math

from .. import flops
from ..errors import InputError
from .registry import MODEL, register

EARLY_LR = 0.01
EARLY_BATCH_SIZE = 32

_CITATION = "Li et al., CVPR 2021 (Ranking Neural Checkpoints), section 3.1"
_CARE = ("runs on a deep copy (the loaded checkpoint is untouched); seeded data order and dropout; a diverged "
         "run (non-finite loss) gives no score; multi-label tasks: BCE loss, exact-match accuracy")


def early_stopped_accuracy(checkpoint, task, epochs: int, *, seed: int = 0, lr: float = EARLY_LR,
                           batch_size: int = EARLY_BATCH_SIZE, image_size: int | None = None, device=None,
                           cache_dir=None, use_cache: bool = True, progress: bool = False) -> float:
    """Test accuracy in [0, 1] after fine-tuning `checkpoint` on `task` for `epochs` epochs.

    image_size: input size instead of the checkpoint's own. cache_dir / use_cache: the run cache (default
    under the feature cache's root). Raises InputError for a checkpoint that cannot be fine-tuned and when
    the run diverges.
    """
    from .. import checkpoints
    from ..finetune import Finetuner
    from ..groundtruth import run_store, sweep_lr
    from ..progress import progress_bar
    from ..tasks import load as load_task

    task = load_task(task)
    if not isinstance(checkpoint, checkpoints.Checkpoint):
        checkpoint = checkpoints.load(checkpoint)
    tuner = Finetuner(checkpoint, task, image_size=image_size, device=device)
    steps = tuner.resolve_steps(None, epochs, batch_size)
    store = run_store(cache_dir) if use_cache else None
    with progress_bar(steps, f"fine-tuning {checkpoint.name} {epochs} epoch(s)", enabled=progress) as advance:
        run = sweep_lr(tuner, store, lr=lr, steps=(steps,), batch_size=batch_size, seed=seed,
                       advance=lambda: advance())[steps]
    if run.diverged:
        raise InputError(f"checkpoint {checkpoint.name}: fine-tuning diverged (non-finite loss) at lr {lr:g}, "
                         f"batch {tuner.batch_for(batch_size)}; expected a finite loss to score it")
    return float(run.accuracy)


def _early_cost(name, n, d, c, test_n, forward, epochs):
    forward = flops.need_forward(name, forward)
    steps = math.ceil(epochs * n / EARLY_BATCH_SIZE)  # full batches of 32, as neucrab.finetune runs them
    per_sample = forward + flops.gemm(1, d, c)  # the network and its new linear head
    return flops.finetune_cost(steps * EARLY_BATCH_SIZE, per_sample, 1, test_n)


def _finetune_1ep_cost(n, d, c, sources, test_n, *, forward=None):
    return _early_cost("finetune_1ep", n, d, c, test_n, forward, epochs=1)


def _finetune_5ep_cost(n, d, c, sources, test_n, *, forward=None):
    return _early_cost("finetune_5ep", n, d, c, test_n, forward, epochs=5)


@register(
    "finetune_1ep",
    needs=MODEL,
    description="test accuracy after fine-tuning the whole network for 1 epoch (SGD momentum 0.9, lr 0.01, batch 32)",
    citation=_CITATION,
    care=_CARE,
    multilabel=True,
    cost=_finetune_1ep_cost,
)
def finetune_1ep(checkpoint, task, *, seed: int = 0, **options) -> float:
    """The paper's "Fine-tune (1 epoch)": `early_stopped_accuracy(checkpoint, task, 1, ...)`."""
    return early_stopped_accuracy(checkpoint, task, 1, seed=seed, **options)


@register(
    "finetune_5ep",
    needs=MODEL,
    description="test accuracy after fine-tuning the whole network for 5 epochs (SGD momentum 0.9, lr 0.01, batch 32)",
    citation=_CITATION,
    care=_CARE,
    multilabel=True,
    cost=_finetune_5ep_cost,
)
def finetune_5ep(checkpoint, task, *, seed: int = 0, **options) -> float:
    """The paper's "Fine-tune (5 epochs)": `early_stopped_accuracy(checkpoint, task, 5, ...)`."""
    return early_stopped_accuracy(checkpoint, task, 5, seed=seed, **options)
