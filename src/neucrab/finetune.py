"""The one fine-tuning loop, shared by the ground-truth sweep (`neucrab.groundtruth`) and the early-stopped
fine-tuning measures (`neucrab.measures.finetune_measures`).

What a run does (the paper's evaluation procedure G, appendix A.2, for one learning rate and step count):

- network: a deep copy of `checkpoint.feature_module()` (so the loaded checkpoint is never touched) with a new
  linear classifier on its (B, D) features, one output per task class. The classifier starts at zero
  (weights and bias), as BiT (Kolesnikov et al. 2020) does: every class starts equal, and the only
  randomness of a run is its data order (and dropout / drop-path inside the network, seeded too).
- training: the whole network, SGD with momentum 0.9 (PyTorch's heavy-ball form), no weight decay, a constant
  learning rate, no augmentation, BatchNorm in train mode (batch statistics, running statistics updated), as
  any fine-tuning does. Loss: mean cross-entropy; binary cross-entropy with logits, averaged over samples and
  labels, for a multi-label task.
- data order: seeded by `seed`: one permutation of the training split per epoch (numpy's default_rng(seed)),
  the permutations concatenated into one stream, and step t takes the next `batch` indices of that stream, so
  every batch is full (a batch may span two epochs, and then may hold a sample of both). Batch t therefore
  never depends on how many steps the run will take. `batch` is min(batch_size, training samples).
- epochs: `epochs=E` is ceil(E * N / batch) steps.
- evaluation: test accuracy at every step count in `eval_at` and at the end, with the network in eval mode
  (BatchNorm running statistics), which changes no state. Single-label: arg-max class == label. Multi-label:
  exact match (every label's logit > 0 exactly when the label is present), the strict analogue of accuracy.
- prefixes: with a constant learning rate and this data order, a run of S steps passes through exactly the
  states of every shorter run, so one run evaluated at `eval_at=(2500, 5000, ...)` gives the results of the
  shorter runs of a sweep (the tests check this against separate runs, bit for bit).
- reproducibility: bit for bit on the same device and torch thread count; another thread count or device
  changes float rounding (and, on CPU, dropout masks), hence results within run-to-run noise, not identical.
- divergence: a non-finite training loss at step t stops the run; it is marked `diverged`, its accuracy is NaN
  and only evaluations at step counts < t are kept (those runs never saw a non-finite loss).

Inputs come through the same preprocessing as feature extraction (`extract`'s batch loader: resize, centre
crop, normalise with the checkpoint's `Preprocess`), optionally at another `image_size` (to make fine-tuning
on a CPU feasible). A split whose preprocessed float32 tensors fit in MEMORY_BOUND bytes (1 GiB) is decoded
once and held in memory, since every epoch revisits it; a larger split is decoded batch by batch, the next
batch on a background thread while the network trains on the current one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ._validate import check_count, check_learning_rate, check_positive, check_seed
from .checkpoints.base import SizeChecked, Tokenizing, Trainable
from .errors import InputError
from .extract import _batch_loader, _check_pair
from .tasks import Task
from .tasks import load as load_task

MOMENTUM = 0.9
MEMORY_BOUND = 1 << 30  # bytes of preprocessed float32 inputs held in memory per split (larger: streamed)
LOOP_VERSION = 1  # bump when anything above changes what a run computes: cached run results become stale


@dataclass
class FinetuneResult:
    """The outcome of one fine-tuning run.

    accuracy: test accuracy after the last step (NaN when diverged). accuracies: step count -> test accuracy
    for every `eval_at` point reached before a divergence, and the end. steps: steps asked for; steps_run:
    steps completed. diverged / diverged_at: a non-finite loss at step `diverged_at` stopped the run.
    batch_size: the batch actually used (min(asked, training samples)). image_size: the input size used
    (None for text). seconds: training wall time (evaluation excluded); seconds_at: the same at each
    evaluated step count. losses: the training loss of every step run. model: the trained network
    (input batch -> logits), only with `return_model=True`.
    """

    accuracy: float
    accuracies: dict[int, float]
    steps: int
    steps_run: int
    lr: float
    batch_size: int
    seed: int
    image_size: int | None
    diverged: bool = False
    diverged_at: int | None = None
    seconds: float = 0.0
    seconds_at: dict[int, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    device: str = "cpu"
    model: nn.Module | None = field(default=None, repr=False)


def finetune(checkpoint, task, *, lr: float, steps: int | None = None, epochs: float | None = None,
             batch_size: int = 512, seed: int = 0, eval_at: Iterable[int] = (), image_size: int | None = None,
             device=None, progress: bool = False, return_model: bool = False) -> FinetuneResult:
    """Fine-tune `checkpoint` (a loaded PyTorch or ONNX checkpoint, a spec or an nn.Module) on `task` (a Task or task
    spec) and return its test accuracy; see the module docstring for every setting.

    lr: constant learning rate (> 0). steps or epochs (exactly one): training length. batch_size: 512 in the
    paper. eval_at: step counts (1..steps) at which the test accuracy is also recorded. image_size: input
    size instead of the checkpoint's own (image checkpoints). device: default "cuda" when available, else
    "cpu". progress: a progress bar over the steps (stderr, terminals only).
    """
    from .checkpoints import Checkpoint, load
    from .progress import progress_bar

    if not isinstance(checkpoint, Checkpoint):  # a spec or an nn.Module
        checkpoint = load(checkpoint)
    tuner = Finetuner(checkpoint, task, image_size=image_size, device=device)
    total = tuner.resolve_steps(steps, epochs, batch_size)
    with progress_bar(total, f"fine-tuning {checkpoint.name}", enabled=progress) as advance:
        return tuner.run(lr=lr, steps=total, batch_size=batch_size, seed=seed, eval_at=eval_at,
                         advance=lambda: advance(), return_model=return_model)


def trainable(checkpoint):
    """`checkpoint` as a checkpoint with a trainable PyTorch network: an ONNX checkpoint converted by onnx2torch
    (`neucrab.checkpoints.onnx_torch`), any other as it is."""
    from .checkpoints.onnx_model import OnnxCheckpoint

    if isinstance(checkpoint, OnnxCheckpoint):
        from .checkpoints.onnx_torch import to_torch

        return to_torch(checkpoint)
    return checkpoint


def require_trainable(checkpoint) -> None:
    """InputError unless `checkpoint` carries a PyTorch network that can be trained."""
    if not isinstance(checkpoint, Trainable):
        kind = getattr(checkpoint, "modality", "")  # may be anything a user passed: say what it is
        what = "precomputed features have" if kind == "features" else f"{type(checkpoint).__name__} has"
        raise InputError(f"checkpoint {getattr(checkpoint, 'name', checkpoint)!r}: {what} no PyTorch network and "
                         "cannot be fine-tuned; expected a PyTorch checkpoint (nn.Module, TorchScript, .pth, "
                         "ARCH=WEIGHTS, timm:NAME, hf:NAME) or an ONNX file")


# ------------------------------------------------------------------------------------------------ inputs


class _Subset:
    """Samples `indices` of a split, as the sequence extract's batch loader reads."""

    def __init__(self, split, indices: np.ndarray):
        self.split, self.indices = split, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.split[int(self.indices[i])]


class _ImageInputs:
    """Preprocessed image batches of one split, by sample indices: held in memory when the split's float32
    tensors fit in `memory_bound` bytes, else decoded per batch by extract's loader."""

    def __init__(self, split, preprocess, channels_last: bool, device: torch.device, memory_bound: int):
        self.split, self.channels_last, self.device = split, channels_last, device
        self.view = SimpleNamespace(preprocess=preprocess)  # all the loader reads of a checkpoint
        self.fits = len(split) * 3 * preprocess.size ** 2 * 4 <= memory_bound
        self.held: torch.Tensor | None = None

    def _decode(self, indices: np.ndarray) -> torch.Tensor:
        return _batch_loader(self.view, _Subset(self.split, indices), "image", self.channels_last)(0, len(indices))

    def prepare(self) -> None:
        """Decode the whole split once (outside inference mode, so batches can be used for training)."""
        if self.fits and self.held is None:
            rows = np.arange(len(self.split))
            self.held = torch.cat([self._decode(rows[start:start + 256]) for start in range(0, len(rows), 256)])

    def host(self, indices: np.ndarray) -> torch.Tensor:
        """The batch on the CPU (thread-safe: used for prefetching)."""
        if self.held is not None:
            return self.held[torch.from_numpy(indices)]
        return self._decode(indices)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return batch.to(self.device).contiguous(memory_format=layout)


class _TextInputs:
    """Tokenised text batches of one split (tokenising is cheap: nothing is held)."""

    def __init__(self, split, checkpoint, device: torch.device):
        self.split, self.checkpoint, self.device = split, checkpoint, device
        self.fits = True

    def prepare(self) -> None:
        pass

    def host(self, indices: np.ndarray) -> dict:
        return self.checkpoint.tokenize([self.split[int(i)] for i in indices])

    def to_device(self, batch: dict) -> dict:
        return {name: value.to(self.device) for name, value in batch.items()}


class _Classifier(nn.Module):
    """Feature module + new linear head: an input batch (tensor, or dict of tokenised text) -> logits."""

    def __init__(self, features: nn.Module, head: nn.Linear):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, batch) -> torch.Tensor:
        features = self.features(**batch) if isinstance(batch, dict) else self.features(batch)
        return self.head(features.float())


class _Order:
    """The seeded data order: one permutation per epoch, concatenated; `next()` gives the next batch."""

    def __init__(self, rows: int, batch: int, seed: int):
        self.rows, self.batch = rows, batch
        self.rng = np.random.default_rng(seed)
        self.pending = np.empty(0, dtype=np.int64)

    def next(self) -> np.ndarray:
        while len(self.pending) < self.batch:
            self.pending = np.concatenate([self.pending, self.rng.permutation(self.rows)])
        batch, self.pending = self.pending[:self.batch], self.pending[self.batch:]
        return batch


# ------------------------------------------------------------------------------------------------- loop


class Finetuner:
    """Fine-tuning runs of one checkpoint on one task that share the decoded inputs (a sweep's runs).

    `run(lr=, steps=, ...)` does one run (see the module docstring); `finetune` is the one-run shortcut.
    """

    def __init__(self, checkpoint, task, *, image_size: int | None = None, device=None,
                 memory_bound: int = MEMORY_BOUND):
        checkpoint = trainable(checkpoint)  # ONNX: converted to PyTorch (fingerprint: the ONNX one + a marker)
        require_trainable(checkpoint)
        self.checkpoint = checkpoint
        self.task: Task = load_task(task)
        _check_pair(checkpoint, self.task)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.image_size = self._image_size(image_size)
        if isinstance(checkpoint, SizeChecked) and self.image_size is not None:
            checkpoint.check_input_size(self.image_size)  # a converted ONNX graph may not take this size
        if self.task.modality == "image":
            preprocess = dataclasses.replace(checkpoint.preprocess, size=self.image_size)
            self.inputs = {name: _ImageInputs(self.task.split(name), preprocess, checkpoint.channels_last, self.device,
                                              memory_bound) for name in ("train", "test")}
        elif self.task.modality == "text" and isinstance(checkpoint, Tokenizing):
            self.inputs = {name: _TextInputs(self.task.split(name), checkpoint, self.device)
                           for name in ("train", "test")}
        else:
            raise InputError(f"task {self.task.name}: fine-tuning takes image or text tasks, got "
                             f"{self.task.modality} data for checkpoint {checkpoint.name}")

    def _image_size(self, image_size) -> int | None:
        if self.task.modality != "image":
            if image_size is not None:
                raise InputError(f"image_size: applies to image checkpoints; {self.checkpoint.name} takes "
                                 f"{self.task.modality} input")
            return None
        if image_size is None:
            return int(self.checkpoint.preprocess.size)
        return check_count(image_size, "image_size")

    def batch_for(self, batch_size) -> int:
        """The batch actually used: min(batch_size, training samples)."""
        return min(check_count(batch_size, "batch_size"), len(self.task.train))

    def resolve_steps(self, steps, epochs, batch_size) -> int:
        """The step count from `steps` or `epochs` (exactly one given): ceil(epochs * N / batch)."""
        if (steps is None) == (epochs is None):
            raise InputError(f"steps, epochs: got {steps!r}, {epochs!r}; expected exactly one of them")
        if epochs is not None:
            epochs = check_positive(epochs, "epochs")
            return max(1, math.ceil(epochs * len(self.task.train) / self.batch_for(batch_size)))
        return check_count(steps, "steps")

    def _network(self, train_inputs) -> _Classifier:
        """A trainable copy of the feature module with a zero-initialised linear head, on the device."""
        features = copy.deepcopy(self.checkpoint.feature_module())
        for parameter in features.parameters():
            if not parameter.is_leaf:  # deepcopy of a TorchScript module clones parameters through autograd
                parameter.detach_()
            parameter.requires_grad_(True)
        features.to(self.device)
        features.eval()
        with torch.no_grad():  # the feature width, from two training samples
            width = features_of(features, train_inputs.to_device(train_inputs.host(np.arange(2) % len(
                self.task.train)))).shape[1]
        head = nn.Linear(width, self.task.n_classes).to(self.device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return _Classifier(features, head)

    def run(self, *, lr: float, steps: int, batch_size: int = 512, seed: int = 0, eval_at: Iterable[int] = (),
            advance: Callable[[], None] | None = None, on_eval: Callable[[int, float, float], None] | None = None,
            return_model: bool = False) -> FinetuneResult:
        """One run of `steps` steps at constant `lr`. advance(): called after each step; on_eval(step,
        accuracy, seconds): called at each evaluation (seconds: training time so far)."""
        lr = check_learning_rate(lr)
        seed = check_seed(seed)
        steps = self.resolve_steps(steps, None, batch_size)
        batch = self.batch_for(batch_size)
        asked = [int(point) for point in eval_at]
        points = sorted(set(asked) | {steps})
        if points[0] < 1 or points[-1] > steps:
            raise InputError(f"eval_at: got {sorted(asked)}; expected step counts between 1 and steps={steps}")
        for inputs in self.inputs.values():
            inputs.prepare()
        train_inputs, labels = self.inputs["train"], self.task.train.labels
        multilabel = self.task.multilabel
        loss_function = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded dropout / drop-path, global RNG left as it was
            torch.manual_seed(seed)
            network = self._network(train_inputs)
            optimizer = torch.optim.SGD(network.parameters(), lr=float(lr), momentum=MOMENTUM, weight_decay=0.0)
            order = _Order(len(self.task.train), batch, seed)
            result = FinetuneResult(accuracy=math.nan, accuracies={}, steps=steps, steps_run=0, lr=float(lr),
                                    batch_size=batch, seed=seed, image_size=self.image_size,
                                    device=str(self.device))
            network.train()
            started = time.perf_counter()
            evaluating = 0.0  # time spent evaluating, excluded from the training time
            with _Prefetcher(train_inputs, order, steps, enabled=not train_inputs.fits) as batches:
                for step in range(1, steps + 1):
                    indices, host_batch = next(batches)
                    target = torch.as_tensor(labels[indices], dtype=torch.float32 if multilabel else torch.int64)
                    loss = loss_function(network(train_inputs.to_device(host_batch)), target.to(self.device))
                    value = float(loss.detach())
                    if not math.isfinite(value):  # diverged: the network's outputs are no longer numbers
                        result.diverged, result.diverged_at = True, step
                        break
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    result.losses.append(value)
                    result.steps_run = step
                    if advance is not None:
                        advance()
                    if step in points:
                        seconds = time.perf_counter() - started - evaluating
                        clock = time.perf_counter()
                        accuracy = self.evaluate(network, batch)
                        evaluating += time.perf_counter() - clock
                        result.accuracies[step], result.seconds_at[step] = accuracy, seconds
                        if on_eval is not None:
                            on_eval(step, accuracy, seconds)
            result.seconds = time.perf_counter() - started - evaluating
        if not result.diverged:
            result.accuracy = result.accuracies[steps]
        if return_model:
            result.model = network.eval()
        return result

    def evaluate(self, network: nn.Module, batch: int) -> float:
        """Test accuracy (exact match for multi-label tasks) with the network in eval mode; leaves it in
        train mode."""
        inputs, labels = self.inputs["test"], self.task.test.labels
        network.eval()
        correct = 0
        with torch.inference_mode():
            for start in range(0, len(labels), batch):
                indices = np.arange(start, min(start + batch, len(labels)))
                logits = network(inputs.to_device(inputs.host(indices))).float().cpu().numpy()
                if self.task.multilabel:
                    correct += int(np.all((logits > 0) == (labels[indices] > 0), axis=1).sum())
                else:
                    correct += int((logits.argmax(axis=1) == labels[indices]).sum())
        network.train()
        return correct / len(labels)


def features_of(features: nn.Module, batch) -> torch.Tensor:
    """Run a feature module on a batch (tensor, or dict of tokenised text)."""
    return features(**batch) if isinstance(batch, dict) else features(batch)


class _Prefetcher:
    """Yields (indices, CPU batch) for `steps` steps in the data order; when enabled, the next batch is
    decoded on a background thread while the network trains on the current one."""

    def __init__(self, inputs, order: _Order, steps: int, enabled: bool):
        self.inputs, self.order, self.remaining, self.enabled = inputs, order, steps, enabled
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neucrab-finetune") if enabled else None
        self.pending = None

    def _submit(self):
        if self.remaining <= 0:
            return None
        self.remaining -= 1
        indices = self.order.next()
        if self.pool is None:
            return indices, None
        return indices, self.pool.submit(self.inputs.host, indices)

    def __enter__(self):
        self.pending = self._submit()
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self.pending is None:
            raise StopIteration
        indices, future = self.pending
        batch = future.result() if future is not None else self.inputs.host(indices)
        self.pending = self._submit()
        return indices, batch

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False
