"""Mini-NeuCRaB: the small networks (checkpoints/mini.py), their source data (bench/mini_data.py) and the
seeded pre-training (bench/pretrain.py, `neucrab pretrain-mini`)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import neucrab.checkpoints as checkpoints
from neucrab.bench import mini_data
from neucrab.checkpoints.features import find_head
from neucrab.checkpoints.mini import MINI_ARCHS, MINI_PREPROCESS
from neucrab.cli import main
from neucrab.extract import extract
from neucrab.tasks import load as load_task
from neucrab.tasks.builtin import _mnist5k
from neucrab.tasks.items import ImageArray
from neucrab.tasks.preprocess import preprocess_images

COMMITTED = Path(__file__).parents[1] / "src" / "neucrab" / "bench" / "mini" / "checkpoints"
FEATURES = {"mini_cnn": 128, "mini_resnet": 128, "mini_mlp": 256, "mini_vit": 64, "mini_mobilenet": 128}
HEADS = {"sup_cnn_stage1": 10, "sup_cnn_stage2": 10, "sup_cnn_stage3": 10, "sup_cnn_stage4": 10,
         "rotation_cnn": 4, "semi10_cnn": 10, "vae_cnn": None, "sup_resnet": 10, "sup_mlp": 10, "sup_vit": 10,
         "sup_mobilenet": 10, **{f"sup_patches_cnn_stage{k}": 5 for k in range(1, 5)}}  # 5 photographs


@pytest.mark.parametrize("arch", sorted(MINI_ARCHS))
def test_shapes_and_head(arch):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with_head, headless = MINI_ARCHS[arch](10).eval(), MINI_ARCHS[arch](0).eval()
    assert with_head(x).shape == (2, 10)
    assert headless(x).shape == (2, FEATURES[arch])
    assert find_head(with_head) == ("head", with_head.head)
    # Without get_classifier() the MLP's and ViT's last hidden Linear would pass for a head.
    assert find_head(headless) is None
    assert not any(key.startswith("head.") for key in headless.state_dict())


def test_mlp_features_are_the_head_input():
    """neucrab's features = relu(W2 relu(W1 x + b1) + b2), its probabilities = softmax(head), by hand."""
    torch.manual_seed(0)
    model = MINI_ARCHS["mini_mlp"](10).eval()
    checkpoint = checkpoints.load(model)
    x = torch.randn(3, 3, 32, 32)
    first, second = model.body[1], model.body[3]
    hidden = torch.relu(x.flatten(1) @ first.weight.T + first.bias)
    expected = torch.relu(hidden @ second.weight.T + second.bias)
    logits = expected @ model.head.weight.T + model.head.bias
    features, probs = checkpoint.forward(x.numpy())
    np.testing.assert_allclose(features, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert checkpoint.preprocess == MINI_PREPROCESS


def test_cnn_features_are_the_pooled_map():
    torch.manual_seed(0)
    model = MINI_ARCHS["mini_cnn"](0).eval()
    x = torch.randn(3, 3, 32, 32)
    features, probs = checkpoints.load(model).forward(x.numpy())
    with torch.no_grad():
        expected = model.features(x).mean(dim=(2, 3))
    assert probs is None
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_rotation_turns_like_np_rot90():
    square = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    # A quarter turn counter-clockwise: the right column comes to the top.
    assert mini_data.rotate(square, np.array([1]))[0, 0].tolist() == [[2.0, 4.0], [1.0, 3.0]]
    assert mini_data.rotate(square, np.array([2]))[0, 0].tolist() == [[4.0, 3.0], [2.0, 1.0]]
    images = torch.arange(4 * 5 * 5, dtype=torch.float32).view(4, 1, 5, 5)
    turned = mini_data.rotate(images, np.array([0, 1, 2, 3]))
    for k in range(4):
        assert np.array_equal(turned[k, 0].numpy(), np.rot90(images[k, 0].numpy(), k))


def test_inputs_match_neucrab_preprocessing():
    images, _ = _mnist5k()
    some = images[[0, 777, 2500, 4999]]
    ours = mini_data.three_channels(mini_data.to_inputs(some))
    theirs = preprocess_images([ImageArray(some, "mnist")[i] for i in range(len(some))], MINI_PREPROCESS)
    assert ours.shape == theirs.shape == (4, 3, 32, 32)
    assert torch.equal(ours.contiguous(), theirs.contiguous())
    # Black pixels (MNIST's border) become -1, white ones at most 1.
    assert ours[:, :, 0, 0].eq(-1.0).all() and ours.max() <= 1.0


def test_splits():
    _, labels = _mnist5k()
    held, train = mini_data.held_out_indices(), mini_data.train_indices()
    assert held.tolist() == list(range(9, 5000, 10))
    assert len(train) == 4500 and not set(train) & set(held)
    assert np.bincount(labels[held]).tolist() == [50] * 10
    labelled = mini_data.labelled_subset(labels, train, 0.1, seed=0)
    assert np.bincount(labels[labelled], minlength=10).tolist() == [45] * 10
    assert set(labelled) <= set(train)
    assert np.array_equal(labelled, mini_data.labelled_subset(labels, train, 0.1, seed=0))
    assert not np.array_equal(labelled, mini_data.labelled_subset(labels, train, 0.1, seed=1))


def test_shift_moves_by_at_most_two_pixels():
    image = torch.full((1, 1, 8, 8), -1.0)
    image[0, 0, 4, 4] = 1.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        moved = mini_data.shift(image, rng)
        (y,), (x,) = np.nonzero(moved[0, 0].numpy() == 1.0)
        assert abs(y - 4) <= 2 and abs(x - 4) <= 2


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_quick_pretraining(tmp_path, capsys):
    assert main(["pretrain-mini", "--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(f"{name}.safetensors" for name in HEADS)
    for name, head in HEADS.items():
        entry = manifest["files"][f"{name}.safetensors"]
        assert entry["sha256"] == _sha256(tmp_path / f"{name}.safetensors")
        assert (entry["seed"], entry["epochs"], entry["quick"]) == (0, 1, True)
        checkpoint = checkpoints.load(f"{entry['architecture']}={tmp_path / name}.safetensors")
        _, probs = checkpoint.forward(np.zeros((2, 3, 32, 32), np.float32))
        assert (None if probs is None else probs.shape[1]) == head
    assert manifest["files"]["semi10_cnn.safetensors"]["labelled_images"] == 50  # 10% of 500
    assert not list(tmp_path.glob(".*.tmp"))

    # A rerun skips what is up to date and retrains what is missing, to the same bytes (seeded).
    kept = (tmp_path / "sup_mlp.safetensors").stat().st_mtime_ns
    (tmp_path / "rotation_cnn.safetensors").unlink()
    capsys.readouterr()
    assert main(["pretrain-mini", "--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    assert "sup_mlp: up to date, skipped" in capsys.readouterr().err
    assert (tmp_path / "sup_mlp.safetensors").stat().st_mtime_ns == kept
    assert _sha256(tmp_path / "rotation_cnn.safetensors") == manifest["files"]["rotation_cnn.safetensors"]["sha256"]


def test_committed_checkpoints(tmp_path):
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(f"{name}.safetensors" for name in HEADS)
    total = 0
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == _sha256(COMMITTED / name)
        assert not entry["quick"]
        total += (COMMITTED / name).stat().st_size
    assert total < 20e6
    # The held-out digits (every 10th row) as a task, classified by the source head through neucrab's extraction.
    images, labels = _mnist5k()
    held = np.arange(9, 5000, 10)
    np.savez(tmp_path / "held.npz", x_train=images[::250], y_train=labels[::250], x_test=images[held],
             y_test=labels[held])
    task = load_task(tmp_path / "held.npz")
    checkpoint = checkpoints.load(f"mini_cnn={COMMITTED / 'sup_cnn_stage4.safetensors'}")
    embedding = extract(checkpoint, task, "test", cache_dir=tmp_path / "cache", progress=False)
    # Source class k of the head is digit k.
    assert np.mean(embedding.probs.argmax(axis=1) == labels[held]) > 0.95
    vae = checkpoints.load(f"mini_cnn={COMMITTED / 'vae_cnn.safetensors'}")
    assert not vae.has_head and extract(vae, task, "test", use_cache=False, progress=False).features.shape == (500, 128)
