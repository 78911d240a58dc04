"""`neucrab pretrain-mini`: pre-train Mini-NeuCRaB's checkpoints (MNIST 5k, and photo patches), seeded, on the CPU.

The kinds of supervision follow the paper's Group I-III checkpoints, scaled down (4,500 training images,
500 held out; see `mini_data`), each `DEFAULT_EPOCHS` epochs in batches of 32 with random shifts of up to
2 pixels, on one CPU thread:

====================================  =========  ===========================================================
file                                  network    training
====================================  =========  ===========================================================
`sup_cnn_stage1..4.safetensors`       mini_cnn   digits, all labels; SGD, 3 learning-rate decays (x0.1),
                                                 saved just before each decay and at the end (Group II)
`rotation_cnn.safetensors`            mini_cnn   which of 4 rotations (0/90/180/270 degrees) was applied,
                                                 no labels; head = 4 rotation classes
`semi10_cnn.safetensors`              mini_cnn   digits on a stratified 10% of the labels + the rotation loss
                                                 on all images (S4L's Semi-Rotation-10%; rotation head not saved)
`vae_cnn.safetensors`                 mini_cnn   encoder of a VAE (16-d latent, BCE + KL), headless
`sup_resnet/mlp/vit/mobilenet`        mini_*     as sup_cnn, the final stage (Group III: architectures);
                                                 the ViT with AdamW instead of SGD
`sup_patches_cnn_stage1..4`           mini_cnn   a second source (Group II): which of five scikit-image
                                                 photographs a 32-px patch comes from (`mini_data`), the
                                                 same schedule and stages as sup_cnn
====================================  =========  ===========================================================

`manifest.json` records per file its kind, network, epochs, seed, held-out score, seconds and sha256. Files
are written to a temporary name and renamed, so an interrupted run leaves no partial file; a rerun skips
models whose files exist with the sha256, seed, epochs and mode their manifest entries record.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_count, check_seed
from ..cache import atomic_write
from ..checkpoints.mini import MINI_ARCHS, MINI_PREPROCESS, MiniCNN, MiniNet
from ..errors import InputError
from ..progress import progress_bar
from ..threads import torch_threads
from . import mini_data as data

DEFAULT_EPOCHS = 6  # the whole default run in about 7 minutes on one core (8 epochs took 9 min)
QUICK_IMAGES = 500  # --quick: 1 epoch on this many training images (stratified), for tests
THREADS = 1  # fixed, since float sums (hence the weights) depend on how the work is split
BATCH = 32  # as fast per epoch as 128 on the CPU (measured), and 4x the steps: the ViT and the MLP need them
LABELLED_BATCH = 16  # semi10: labelled images per step, next to BATCH rotated ones
SEMI_FRACTION = 0.1
LATENT = 16
SGD_LR, WEIGHT_DECAY = 0.02, 5e-4
VIT_LR, VIT_WEIGHT_DECAY = 1e-3, 0.05  # the ViT barely learned with SGD (27% held out); AdamW, as ViTs are trained
VAE_LR = 1e-3  # Adam
# The learning rate drops x0.1 at these fractions of the steps (the paper's ImageNet schedules decay at epochs
# 30, 60, 80 of 90; here later, since a short run needs most steps at the full rate). Group II's stages are saved
# just before each drop and at the end.
DECAY_AT = (0.5, 0.75, 0.9)
FINAL = len(DECAY_AT) + 1
SOURCE_CLASSES = 10


@dataclass
class Context:
    x: torch.Tensor  # (5000, 1, 32, 32) inputs
    labels: np.ndarray
    train: np.ndarray  # indices trained on
    held: np.ndarray  # held-out indices
    epochs: int
    seed: int
    progress: bool


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    arch: str
    files: tuple[str, ...]
    metric: str
    source: str = "mnist"  # a key of SOURCES: what it is pre-trained on


# The pre-training sources: name -> (description, function giving (inputs (N, 1, 32, 32), labels)).
SOURCES = {"mnist": (data.SOURCE, data.source_data), "patches": (data.PATCH_SOURCE, data.patch_source_data)}


RECIPES = (
    Recipe("sup_cnn", "supervised 100%", "mini_cnn", tuple(f"sup_cnn_stage{k}.safetensors" for k in range(1, 5)),
           "digit accuracy"),
    Recipe("rotation_cnn", "self-supervised rotation", "mini_cnn", ("rotation_cnn.safetensors",),
           "rotation accuracy"),
    Recipe("semi10_cnn", "semi-supervised rotation 10%", "mini_cnn", ("semi10_cnn.safetensors",), "digit accuracy"),
    Recipe("vae_cnn", "generative (VAE encoder)", "mini_cnn", ("vae_cnn.safetensors",),
           "reconstruction BCE per image (nats, z = mu)"),
    Recipe("sup_resnet", "supervised 100%", "mini_resnet", ("sup_resnet.safetensors",), "digit accuracy"),
    Recipe("sup_mlp", "supervised 100%", "mini_mlp", ("sup_mlp.safetensors",), "digit accuracy"),
    Recipe("sup_vit", "supervised 100%", "mini_vit", ("sup_vit.safetensors",), "digit accuracy"),
    Recipe("sup_mobilenet", "supervised 100%", "mini_mobilenet", ("sup_mobilenet.safetensors",), "digit accuracy"),
    # Group II's second source: which of five photographs a patch comes from, saved at the same four stages.
    Recipe("sup_patches_cnn", "supervised 100%", "mini_cnn",
           tuple(f"sup_patches_cnn_stage{k}.safetensors" for k in range(1, 5)), "photo accuracy", "patches"),
)

# A trainer calls save(file, network, held-out value) for each file of its recipe, in order.
Save = Callable[[str, nn.Module, float], None]


def pretrain_mini(out, *, seed: int = 0, epochs: int | None = None, quick: bool = False,
                  progress: bool = True, log: Callable[[str], None] = lambda line: None) -> dict:
    """Train every recipe whose files in `out` are missing or stale; returns the manifest (also written)."""
    seed = check_seed(seed, "--seed")
    epochs = check_count(epochs, "--epochs") if epochs is not None else (1 if quick else DEFAULT_EPOCHS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)
    with torch_threads(THREADS):
        contexts: dict[str, Context] = {}
        for recipe in RECIPES:
            if all(_up_to_date(out / name, manifest["files"].get(name), seed, epochs, quick) for name in recipe.files):
                log(f"{recipe.name}: up to date, skipped")
                continue
            if recipe.source not in contexts:
                contexts[recipe.source] = _context(seed, epochs, quick, progress, recipe.source)
            context = contexts[recipe.source]
            TRAINERS[recipe.name](context, recipe, _saver(out, manifest, recipe, context, quick, log))
    return manifest


def _saver(out: Path, manifest: dict, recipe: Recipe, context: Context, quick: bool, log) -> Save:
    """save(file, network, held-out value): write the weights and record them in the manifest (rewritten)."""
    started = time.perf_counter()

    def save(name: str, network: nn.Module, value: float) -> None:
        entry = {
            "kind": recipe.kind, "architecture": recipe.arch, "spec": f"{recipe.arch}={name}",
            "head": _head_size(network), "epochs": context.epochs, "seed": context.seed, "quick": quick,
            "source": SOURCES[recipe.source][0], "train_images": len(context.train),
            "held_out_metric": recipe.metric, "held_out": round(float(value), 5),
            "seconds": round(time.perf_counter() - started, 1),
            "sha256": _write_weights(out / name, network, recipe, context.seed),
        }
        if len(recipe.files) > 1:  # Group II: the stage's point in training
            entry["stage_epochs"] = context.epochs * (*DECAY_AT, 1.0)[recipe.files.index(name)]
        if recipe.name == "semi10_cnn":
            entry["labelled_images"] = len(_semi_labelled(context))
        manifest["files"][name] = entry
        _write_json(out / "manifest.json", manifest)
        log(f"{name}: {recipe.metric} {value:.4f} ({entry['seconds']} s)")

    return save


# ------------------------------------------------------------------------------------------- trainers


def _supervised(context: Context, recipe: Recipe, save: Save) -> None:
    rng = _seed(context.seed)
    model = _network(recipe.arch, int(context.labels.max()) + 1)
    optimizer = _optimizer(recipe.arch, model.parameters())
    staged = len(recipe.files) > 1

    def step(batch: np.ndarray) -> torch.Tensor:
        x = data.three_channels(data.shift(context.x[batch], rng))
        return F.cross_entropy(model(x), _labels(context, batch))

    def stage(k: int) -> None:
        if staged or k == FINAL:
            save(recipe.files[k - 1 if staged else 0], model, _digit_accuracy(model, context))

    _train(context, recipe.name, [model], optimizer, rng, step, stage)


def _rotation(context: Context, recipe: Recipe, save: Save) -> None:
    rng = _seed(context.seed)
    model = _network(recipe.arch, 4)
    optimizer = _optimizer(recipe.arch, model.parameters())

    def step(batch: np.ndarray) -> torch.Tensor:
        turns = rng.integers(0, 4, len(batch))
        x = data.three_channels(data.rotate(data.shift(context.x[batch], rng), turns))
        return F.cross_entropy(model(x), torch.from_numpy(turns))

    def stage(k: int) -> None:
        if k == FINAL:
            save(recipe.files[0], model, _rotation_accuracy(model, context))

    _train(context, recipe.name, [model], optimizer, rng, step, stage)


def _semi(context: Context, recipe: Recipe, save: Save) -> None:
    rng = _seed(context.seed)
    model = _network(recipe.arch, SOURCE_CLASSES)
    rotation_head = nn.Linear(model.num_features, 4)
    optimizer = _optimizer(recipe.arch, [*model.parameters(), *rotation_head.parameters()])
    labelled = _cycle(_semi_labelled(context), LABELLED_BATCH, rng)

    def step(batch: np.ndarray) -> torch.Tensor:
        chosen = next(labelled)
        turns = rng.integers(0, 4, len(batch))
        rotated = data.rotate(data.shift(context.x[batch], rng), turns)
        x = data.three_channels(torch.cat([data.shift(context.x[chosen], rng), rotated]))
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        digits = F.cross_entropy(model.head(features[: len(chosen)]), _labels(context, chosen))
        return digits + F.cross_entropy(rotation_head(features[len(chosen):]), torch.from_numpy(turns))

    def stage(k: int) -> None:
        if k == FINAL:
            save(recipe.files[0], model, _digit_accuracy(model, context))

    _train(context, recipe.name, [model, rotation_head], optimizer, rng, step, stage)


class VAE(nn.Module):
    """A mini_cnn trunk as encoder (128-d pooled output -> mean and log-variance of the latent), and a
    transposed-convolution decoder to 32x32 Bernoulli logits."""

    def __init__(self, latent: int = LATENT):
        super().__init__()
        self.encoder = MiniCNN(num_classes=0)
        self.mu = nn.Linear(128, latent)
        self.logvar = nn.Linear(128, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, 64 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),  # 8x8
            nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),  # 16x16
            nn.ConvTranspose2d(16, 1, 4, 2, 1),  # 32x32 logits
        )

    def losses(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction BCE, KL), each summed per image and averaged over the batch; x: (B, 1, 32, 32)."""
        h = self.encoder(data.three_channels(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        target = (x + 1) / 2  # pixels back in [0, 1]
        bce = F.binary_cross_entropy_with_logits(self.decoder(z), target, reduction="sum") / len(x)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
        return bce, kl


def _vae(context: Context, recipe: Recipe, save: Save) -> None:
    rng = _seed(context.seed)
    vae = VAE().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(vae.parameters(), lr=VAE_LR)

    def step(batch: np.ndarray) -> torch.Tensor:
        bce, kl = vae.losses(data.shift(context.x[batch], rng))
        return bce + kl

    def stage(k: int) -> None:
        if k == FINAL:
            vae.eval()
            with torch.inference_mode():
                bce, _ = vae.losses(context.x[context.held], sample=False)
            save(recipe.files[0], vae.encoder, float(bce))

    _train(context, recipe.name, [vae], optimizer, rng, step, stage)


TRAINERS = {"sup_cnn": _supervised, "rotation_cnn": _rotation, "semi10_cnn": _semi, "vae_cnn": _vae,
            "sup_resnet": _supervised, "sup_mlp": _supervised, "sup_vit": _supervised, "sup_mobilenet": _supervised,
            "sup_patches_cnn": _supervised}


# ------------------------------------------------------------------------------------------- the loop


def _train(context: Context, name: str, modules: list[nn.Module], optimizer, rng: np.random.Generator,
           step: Callable[[np.ndarray], torch.Tensor], stage: Callable[[int], None]) -> None:
    """`context.epochs` epochs over the training images in seeded random batches of BATCH. The learning rate
    drops x0.1 at the DECAY_AT fractions of the steps; stage(k) is called just before the k-th drop and, with
    k = FINAL, at the end (the networks in eval mode)."""
    total = context.epochs * -(-len(context.train) // BATCH)
    milestones = {total: FINAL}
    for k in range(FINAL - 1, 0, -1):  # each stage at least one step before the next, even in a tiny run
        milestones[min(round(total * DECAY_AT[k - 1]), min(milestones) - 1)] = k
    if min(milestones) < 1:
        raise InputError(f"{name}: {total} training steps are too few for {FINAL} stages")
    done = 0
    with progress_bar(context.epochs, f"pretrain {name}", enabled=context.progress) as advance:
        for _ in range(context.epochs):
            order, losses = rng.permutation(context.train), []
            for start in range(0, len(order), BATCH):
                for module in modules:
                    module.train()
                loss = step(order[start:start + BATCH])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                done += 1
                if done in milestones:
                    for module in modules:
                        module.eval()
                    stage(milestones[done])
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.1
            advance(label=f"loss {np.mean(losses):.3f}")


def _optimizer(arch: str, parameters) -> torch.optim.Optimizer:
    if arch == "mini_vit":
        return torch.optim.AdamW(parameters, lr=VIT_LR, weight_decay=VIT_WEIGHT_DECAY)
    return torch.optim.SGD(parameters, lr=SGD_LR, momentum=0.9, weight_decay=WEIGHT_DECAY)


def _cycle(indices: np.ndarray, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of `size` (at most all of them) from `indices`, reshuffled on each pass."""
    size = min(size, len(indices))
    while True:
        order = rng.permutation(indices)
        for start in range(0, len(order) - size + 1, size):
            yield order[start:start + size]


def _seed(seed: int) -> np.random.Generator:
    """Seed torch (initialisation, VAE noise) and return the numpy generator for data order and augmentation."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return np.random.default_rng(seed)


def _network(arch: str, classes: int) -> MiniNet:
    return MINI_ARCHS[arch](num_classes=classes).to(memory_format=torch.channels_last)


def _labels(context: Context, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(context.labels[rows])


def _semi_labelled(context: Context) -> np.ndarray:
    return data.labelled_subset(context.labels, context.train, SEMI_FRACTION, context.seed)


def _head_size(network: nn.Module) -> int:
    head = getattr(network, "head", None)
    return head.out_features if isinstance(head, nn.Linear) else 0


@torch.inference_mode()
def _predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return model(data.three_channels(x)).argmax(dim=1).numpy()


def _digit_accuracy(model: nn.Module, context: Context) -> float:
    held = context.held
    return float(np.mean(_predict(model, context.x[held]) == context.labels[held]))


def _rotation_accuracy(model: nn.Module, context: Context) -> float:
    """Every held-out image in all 4 rotations."""
    x = context.x[context.held]
    turns = np.repeat(np.arange(4), len(x))
    return float(np.mean(_predict(model, data.rotate(x.repeat(4, 1, 1, 1), turns)) == turns))


# ------------------------------------------------------------------------------------------- files


def _context(seed: int, epochs: int, quick: bool, progress: bool, source: str = "mnist") -> Context:
    x, labels = SOURCES[source][1]()
    train = data.train_indices(len(labels))
    if quick:  # the first QUICK_IMAGES / classes training images of each class
        classes = int(labels.max()) + 1
        per_class = QUICK_IMAGES // classes
        train = np.sort(np.concatenate([train[labels[train] == c][:per_class] for c in range(classes)]))
    return Context(x, labels, train, data.held_out_indices(len(labels)), epochs, seed, progress)


def _write_weights(path: Path, network: nn.Module, recipe: Recipe, seed: int) -> str:
    """Save the state dict as safetensors (standard memory layout) atomically; returns its sha256."""
    from safetensors.torch import save

    tensors = {key: value.detach().contiguous() for key, value in network.state_dict().items()}
    about = {"kind": recipe.kind, "architecture": recipe.arch, "seed": seed, "source": SOURCES[recipe.source][0],
             "preprocess": MINI_PREPROCESS.key()}
    # One metadata key: safetensors writes several in a random order, and the file's sha256 must not change.
    payload = save(tensors, metadata={"neucrab": json.dumps(about, sort_keys=True)})
    _write_atomic(path, payload)
    return hashlib.sha256(payload).hexdigest()


def _write_json(path: Path, value: dict) -> None:
    _write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def _write_atomic(path: Path, payload: bytes) -> None:
    atomic_write(path, payload)


def _read_manifest(out: Path) -> dict:
    path = out / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
            return manifest
    except (OSError, ValueError):
        pass
    return {"source": data.SOURCE, "held_out": f"every {data.HOLD_OUT_EVERY}th image (rows 9, 19, ...)",
            "preprocess": MINI_PREPROCESS.key(), "torch": torch.__version__, "threads": THREADS, "files": {}}


def _up_to_date(path: Path, entry: dict | None, seed: int, epochs: int, quick: bool) -> bool:
    """Whether `path` exists, its manifest entry has this seed, epochs and mode, and its bytes are the ones recorded."""
    if entry is None or (entry.get("seed"), entry.get("epochs"), entry.get("quick")) != (seed, epochs, quick):
        return False
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == entry.get("sha256")
