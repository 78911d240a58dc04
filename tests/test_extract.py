"""Feature extraction: values against an independent forward pass, the cache, resumption, damage, modalities."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from neucrab.checkpoints.base import Checkpoint, Preprocess
from neucrab.errors import InputError
from neucrab.extract import CacheWarning, FeatureStore, cache_key, extract, inference_copy
from neucrab.tasks import Split, load

PREPROCESS = Preprocess(size=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bicubic", crop_pct=0.8)


class TinyNet(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, mean pool -> features (B, 6); linear head -> logits (B, 4)."""

    def __init__(self, skip_uses_conv_output: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.conv2, self.bn2 = nn.Conv2d(5, 6, 3, stride=2, bias=False), nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 4)
        self.skip_uses_conv_output = skip_uses_conv_output
        with torch.no_grad():  # non-trivial statistics, so folding them matters
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
        self.eval()

    def forward(self, x):
        a = self.conv1(x)
        x = torch.relu(self.bn1(a))
        if self.skip_uses_conv_output:  # the conv output feeds more than its BN: folding would be wrong
            x = x + a
        features = torch.relu(self.bn2(self.conv2(x))).mean(dim=(2, 3))
        return features, self.head(features)


class TorchModuleCheckpoint(Checkpoint):
    """The whole Checkpoint contract for an image network: forward(batch) -> numpy (features, probs).

    Counts forward calls and rows; `fail_after` raises inside forward once that many batches ran."""

    def __init__(self, module: nn.Module, name="tiny", fingerprint="tiny-v1", layer=None, preprocess=PREPROCESS):
        super().__init__(name=name, fingerprint=fingerprint, modality="image", preprocess=preprocess,
                         has_head=True, layer=layer)
        self.module = module
        self.calls, self.rows, self.fail_after = 0, 0, None

    def forward(self, batch):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated interruption")
        self.calls += 1
        self.rows += len(batch)
        with torch.inference_mode():
            features, logits = self.module(batch)
        return features.numpy(), torch.softmax(logits, dim=1).numpy()


def make_folder(root, per_class=10, classes=("a", "b", "c")):
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (20 + 3 * i, 15 + 2 * c)
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            if i % 3 == 1:
                image = image.convert("L")  # grey files become RGB
            image.save(root / name / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return load(make_folder(tmp_path_factory.mktemp("task") / "shapes"), test_fraction=0.3)


def reference(task, split_name, module=None):
    """The expected outputs, computed independently: PIL opens each file, torchvision preprocesses, the
    unmodified network runs once on the whole stack."""
    split = task.split(split_name)
    pipeline = transforms.Compose([
        transforms.Resize(math.floor(PREPROCESS.size / PREPROCESS.crop_pct),
                          interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(PREPROCESS.size),
        transforms.ToTensor(),
        transforms.Normalize(PREPROCESS.mean, PREPROCESS.std),
    ])
    batch = torch.stack([pipeline(Image.open(path).convert("RGB")) for path in split.items.paths])
    with torch.no_grad():
        features, logits = (module or TinyNet())(batch)
    return features.numpy(), torch.softmax(logits, dim=1).numpy()


def test_features_equal_an_independent_forward_pass(task, tmp_path):
    checkpoint = TorchModuleCheckpoint(TinyNet())
    original = checkpoint.module
    weights = {k: v.clone() for k, v in original.state_dict().items()}
    for split in ("train", "test"):
        embedding = extract(checkpoint, task, split, cache_dir=tmp_path, batch_size=4, progress=False)
        features, probs = reference(task, split)
        assert embedding.features.dtype == np.float32 and embedding.features.shape == (len(task.split(split)), 6)
        np.testing.assert_allclose(embedding.features, features, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(embedding.probs, probs, rtol=1e-4, atol=1e-6)
        assert np.array_equal(embedding.labels, task.split(split).labels) and not embedding.cached
    # The faster inference copy was used only during extraction; the checkpoint's network is untouched.
    assert checkpoint.module is original and isinstance(original.bn1, nn.BatchNorm2d)
    assert all(torch.equal(v, weights[k]) for k, v in original.state_dict().items())


def test_unoptimised_and_single_threaded_paths_agree(task, tmp_path):
    checkpoint = TorchModuleCheckpoint(TinyNet())
    fast = extract(checkpoint, task, "test", use_cache=False, batch_size=5)
    plain = extract(checkpoint, task, "test", use_cache=False, batch_size=3, num_workers=0, optimize=False)
    np.testing.assert_allclose(fast.features, plain.features, rtol=1e-4, atol=1e-6)
    assert fast.path is None and not list(tmp_path.iterdir())


def test_second_extract_is_a_cache_hit_without_forward(task, tmp_path):
    checkpoint = TorchModuleCheckpoint(TinyNet())
    first = extract(checkpoint, task, "train", cache_dir=tmp_path, batch_size=8)
    assert first.path == tmp_path / f"{cache_key(checkpoint, task, 'train')}.npz" and first.path.is_file()
    checkpoint.calls = 0
    second = extract(checkpoint, task, "train", cache_dir=tmp_path, batch_size=8)
    assert checkpoint.calls == 0 and second.cached
    assert np.array_equal(second.features, first.features) and np.array_equal(second.probs, first.probs)
    # $NEUCRAB_CACHE is the default location.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEUCRAB_CACHE", str(tmp_path))
        assert extract(checkpoint, task, "train").cached and checkpoint.calls == 0


def test_cache_key_covers_checkpoint_task_split_layer_and_preprocessing(task, tmp_path):
    base = TorchModuleCheckpoint(TinyNet())
    keys = {
        cache_key(base, task, "train"),
        cache_key(base, task, "test"),
        cache_key(TorchModuleCheckpoint(TinyNet(), fingerprint="tiny-v2"), task, "train"),
        cache_key(TorchModuleCheckpoint(TinyNet(), layer="conv2"), task, "train"),
        cache_key(TorchModuleCheckpoint(TinyNet(), preprocess=dataclasses.replace(PREPROCESS, size=15)), task,
                  "train"),
        cache_key(base, load(task.source, seed=1, test_fraction=0.3), "train"),
    }
    assert len(keys) == 6
    assert cache_key(base, task, "train") == cache_key(TorchModuleCheckpoint(TinyNet(), name="other"), task, "train")


def test_interrupted_extraction_leaves_no_entry_and_resumes(task, tmp_path):
    rows = len(task.train)  # 21 rows: batches of 2 -> 11 batches, a chunk saved every 3 batches
    checkpoint = TorchModuleCheckpoint(TinyNet())
    checkpoint.fail_after = 7
    with pytest.raises(RuntimeError, match="simulated interruption"):
        extract(checkpoint, task, "train", cache_dir=tmp_path, batch_size=2, save_every=3, optimize=False)
    key = cache_key(checkpoint, task, "train")
    store = FeatureStore(tmp_path)
    assert not store.entry(key).exists()
    assert sorted(p.name for p in store.partial(key).iterdir()) == [
        "rows-0000000000-0000000006.npz", "rows-0000000006-0000000012.npz"]
    assert not list(tmp_path.rglob(".tmp-*"))

    checkpoint.fail_after, checkpoint.calls, checkpoint.rows = None, 0, 0
    resumed = extract(checkpoint, task, "train", cache_dir=tmp_path, batch_size=2, save_every=3, optimize=False)
    assert checkpoint.rows == rows - 12 and checkpoint.calls == math.ceil((rows - 12) / 2)
    assert store.entry(key).is_file() and not store.partial(key).exists()
    features, probs = reference(task, "train")
    np.testing.assert_allclose(resumed.features, features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(resumed.probs, probs, rtol=1e-4, atol=1e-6)


def test_damaged_entry_is_discarded_with_a_warning_and_recomputed(task, tmp_path):
    checkpoint = TorchModuleCheckpoint(TinyNet())
    good = extract(checkpoint, task, "test", cache_dir=tmp_path)
    data = good.path.read_bytes()
    for damaged in (data[: len(data) // 2], data[:-40] + bytes(40), b""):
        good.path.write_bytes(damaged)
        checkpoint.calls = 0
        with pytest.warns(CacheWarning, match="discarding damaged"):
            again = extract(checkpoint, task, "test", cache_dir=tmp_path)
        assert checkpoint.calls > 0 and not again.cached
        np.testing.assert_array_equal(again.features, good.features)
    # An entry written for another key (a renamed file) is never returned either.
    other = TorchModuleCheckpoint(TinyNet(), fingerprint="tiny-v2")
    good.path.replace(tmp_path / f"{cache_key(other, task, 'test')}.npz")
    with pytest.warns(CacheWarning, match="another cache key"):
        assert not extract(other, task, "test", cache_dir=tmp_path).cached


def test_damaged_chunk_is_dropped_with_the_ones_after_it(task, tmp_path):
    checkpoint = TorchModuleCheckpoint(TinyNet())
    checkpoint.fail_after = 9
    with pytest.raises(RuntimeError):
        extract(checkpoint, task, "train", cache_dir=tmp_path, batch_size=2, save_every=2, optimize=False)
    partial = FeatureStore(tmp_path).partial(cache_key(checkpoint, task, "train"))
    chunks = sorted(partial.iterdir())
    assert len(chunks) == 4  # rows 0-4, 4-8, 8-12, 12-16
    chunks[1].write_bytes(b"garbage")
    checkpoint.fail_after, checkpoint.rows = None, 0
    with pytest.warns(CacheWarning):
        resumed = extract(checkpoint, task, "train", cache_dir=tmp_path, batch_size=2, save_every=2,
                          optimize=False)
    assert checkpoint.rows == len(task.train) - 4  # only the first chunk was kept
    np.testing.assert_allclose(resumed.features, reference(task, "train")[0], rtol=1e-4, atol=1e-5)


def test_failed_write_leaves_neither_entry_nor_temp_file(task, tmp_path, monkeypatch):
    checkpoint = TorchModuleCheckpoint(TinyNet())

    def broken_savez(stream, **arrays):
        stream.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        extract(checkpoint, task, "test", cache_dir=tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_inference_copy_folds_batchnorm_only_where_it_is_exact(task):
    probe = torch.randn(2, 3, 16, 16)
    checkpoint = TorchModuleCheckpoint(TinyNet())
    expected = checkpoint.forward(probe)
    with inference_copy(checkpoint, probe) as swapped:
        assert swapped and isinstance(checkpoint.module.bn1, nn.Identity)
        assert checkpoint.module.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_allclose(checkpoint.forward(probe)[0], expected[0], rtol=1e-4, atol=1e-6)
    assert isinstance(checkpoint.module.bn1, nn.BatchNorm2d)

    # conv1's output also feeds a skip connection: folding bn1 into it would change the result, so the
    # check against the original falls back to the copy without folding.
    tricky = TorchModuleCheckpoint(TinyNet(skip_uses_conv_output=True))
    expected = tricky.forward(probe)
    with inference_copy(tricky, probe) as swapped:
        assert swapped and isinstance(tricky.module.bn1, nn.BatchNorm2d)
        np.testing.assert_allclose(tricky.forward(probe)[0], expected[0], rtol=1e-4, atol=1e-6)

    # The feature layer's own output must stay as it is: a conv named by `layer` is never folded.
    layered = TorchModuleCheckpoint(TinyNet(), layer="conv2")
    with inference_copy(layered, probe):
        assert isinstance(layered.module.bn2, nn.BatchNorm2d) and isinstance(layered.module.bn1, nn.Identity)


def test_decoding_runs_a_bounded_number_of_batches_ahead(task, tmp_path):
    """Images are decoded batch by batch as needed: never more than (workers + 2) batches ahead."""
    decoded = []

    class Watched:
        kind = "image"

        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            decoded.append(i)
            return self.items[i]

    watched = dataclasses.replace(task, train=Split("train", Watched(task.train.items), task.train.labels))
    ahead = []

    class Watching(TorchModuleCheckpoint):
        def forward(self, batch):
            ahead.append(len(decoded) - self.rows)
            return super().forward(batch)

    extract(Watching(TinyNet()), watched, "train", use_cache=False, batch_size=2, num_workers=1, optimize=False)
    assert len(decoded) == len(task.train) and max(ahead) <= (1 + 2) * 2


class TextCheckpoint(Checkpoint):
    """Character counts of a-z as features: a text model whose output is easy to compute independently."""

    def __init__(self):
        super().__init__(name="chars", fingerprint="chars-v1", modality="text")

    def forward(self, batch):
        assert isinstance(batch, list) and all(isinstance(text, str) for text in batch)
        return np.array([[text.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for text in batch], np.float32), None


def test_text_task(tmp_path):
    (tmp_path / "t.csv").write_text("text,label,split\nabc,x,train\nbanana,y,train\ncab,x,test\nzz,y,test\n")
    embedding = extract(TextCheckpoint(), str(tmp_path / "t.csv"), "train", cache_dir=tmp_path)
    assert embedding.probs is None and embedding.features[1, 0] == 3 and embedding.features[1, 13] == 2
    assert embedding.features[0, :3].tolist() == [1, 1, 1] and embedding.features.sum() == 9


def test_array_task_with_a_vector_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    np.savez(tmp_path / "v.npz", x_train=x[:7], y_train=[0, 1] * 3 + [0], x_test=x[7:], y_test=[0, 1, 0])
    weight = rng.normal(size=(4, 3)).astype(np.float32)

    class Linear(Checkpoint):
        def forward(self, batch):
            return (batch.numpy() @ weight), None

    embedding = extract(Linear("lin", "lin-v1", "array"), tmp_path / "v.npz", "test", cache_dir=tmp_path,
                        batch_size=2)
    np.testing.assert_allclose(embedding.features, x[7:] @ weight, rtol=1e-6)


def test_precomputed_features_checkpoint(task):
    features = {"train": np.ones((len(task.train), 3)), "test": np.zeros((len(task.test) + 1, 3))}

    class Precomputed(Checkpoint):
        def arrays(self, split):
            return features[split], None

    checkpoint = Precomputed("pre", "pre-v1", "features")
    embedding = extract(checkpoint, task, "train")
    assert embedding.features.dtype == np.float32 and embedding.features.shape == (len(task.train), 3)
    with pytest.raises(InputError, match="holds 10 test feature rows but task shapes has 9 test samples"):
        extract(checkpoint, task, "test")


def test_bad_combinations_are_input_errors(task, tmp_path):
    with pytest.raises(InputError, match="takes text input but task shapes holds image data"):
        extract(TextCheckpoint(), task, "train")
    with pytest.raises(InputError, match="expected 'train' or 'test'"):
        extract(TorchModuleCheckpoint(TinyNet()), task, "validation")
    with pytest.raises(InputError, match="needs a `preprocess`"):
        extract(TorchModuleCheckpoint(TinyNet(), preprocess=None), task, "train")

    class WrongRows(TorchModuleCheckpoint):
        def forward(self, batch):
            return np.zeros((len(batch) + 1, 2), np.float32), None

    with pytest.raises(InputError, match=r"forward returned features of shape \(5, 2\); expected \(4, K\)"):
        extract(WrongRows(TinyNet()), task, "train", use_cache=False, batch_size=4, optimize=False)


def test_cli_extract_fills_the_cache_and_reports_a_hit(task, tmp_path, capsys):
    from neucrab.cli import main

    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 3)).eval()
    scripted = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, still what users have
        torch.jit.script(network).save(str(scripted))
    args = ["extract", str(scripted), "--task", task.source, "--split", "test", "--cache-dir", str(tmp_path / "c")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args + ["--batch-size", "4"]) == 0
        first = capsys.readouterr().out
        assert main(args) == 0
    second = capsys.readouterr().out
    assert "computed" in first and f"{len(load(task.source).test)} x 4 features" in first
    assert "cache hit" in second and str(tmp_path / "c") in second
    assert main(["extract", str(scripted), "--task", str(tmp_path / "missing")]) == 2


class _ChannelMean(nn.Module):
    """Features = the grey image itself, flattened: their length tells the input size the network saw."""

    def forward(self, x):
        return x.mean(dim=1).flatten(1)


def test_at_image_size_feeds_that_size_and_keeps_cache_entries_apart(tmp_path):
    from neucrab import checkpoints
    from neucrab.checkpoints.base import at_image_size

    task = load("digits:40")
    checkpoint = checkpoints.load(_ChannelMean(), preprocess=Preprocess(size=12, crop_pct=1.0))
    native = extract(checkpoint, task, "train", cache_dir=tmp_path, progress=False)
    small = extract(at_image_size(checkpoint, 6), task, "train", cache_dir=tmp_path, progress=False)
    assert native.features.shape[1] == 12 * 12 and small.features.shape[1] == 6 * 6 and not small.cached
    assert at_image_size(checkpoint, 12) is checkpoint and at_image_size(checkpoint, None) is checkpoint
    assert checkpoint.preprocess.size == 12  # the original is untouched
    with pytest.raises(InputError, match="image_size"):
        at_image_size(checkpoint, 0)
