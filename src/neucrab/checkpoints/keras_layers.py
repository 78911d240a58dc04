"""The PyTorch modules that stand for Keras layers, and `build_layer`, which makes one from a parsed layer's
config and weights (`keras_torch.py` runs them in the file's graph order). Conventions:
- layout: tensors are NCHW inside (Keras works in NHWC); a kernel (kh, kw, in, out) becomes (out, in, kh,
  kw), a depthwise kernel (kh, kw, in, m) a grouped convolution with out channel i * m + j, a Dense kernel
  (in, out) its transpose. Keras axes are mapped to NCHW (-1 -> channels); `Flatten` flattens in NHWC order,
  so the Dense after it takes its weights unchanged. `channels_first` layers are refused.
- padding: "valid" none; "same" as TensorFlow pads, total max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0)
  per dimension, the odd pixel at the bottom / right; max pooling pads with -inf, average pooling averages
  only the pixels inside the image (TensorFlow's "same" pooling).
- BatchNormalization: Keras's epsilon; PyTorch momentum = 1 - Keras momentum (so fine-tuning updates the
  running statistics as Keras would); a missing gamma (scale=False) or beta (center=False) starts at 1 or 0.
- activations: Keras's definitions (hard_sigmoid: Keras 2 clip(0.2 x + 0.5, 0, 1), Keras 3 relu6(x + 3) / 6;
  leaky_relu's default slope 0.2 as a function, 0.3 as the LeakyReLU layer; gelu exact).
- input: the task's normalised RGB batch. A 1-channel model gets the luma 0.299 R + 0.587 G + 0.114 B of the
  un-normalised pixels, normalised with the luma-weighted mean and std (for equal per-channel statistics,
  exactly the grey image normalised the same way). A network with a `Flatten` needs its declared size: its
  input is resized (bilinear) to it; a fully convolutional one runs at any size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .keras_file import KerasLayer

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as OpenCV's RGB2GRAY
ACTIVATED = {"Dense", "Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Activation"}  # an `activation` in config
WEIGHTED = {"Dense", "Conv2D", "SeparableConv2D", "DepthwiseConv2D", "BatchNormalization"}


def keras_axis(axis: int, ndim: int) -> int:
    """A Keras axis of a channels-last tensor (batch included) -> the axis of the NCHW tensor."""
    axis = axis + ndim if axis < 0 else axis
    if not 0 < axis < ndim:
        raise ValueError(f"axis {axis} of a {ndim}-d tensor")
    if ndim < 3 or axis == 0:
        return axis
    return 1 if axis == ndim - 1 else axis + 1


# ------------------------------------------------------------------------------------------------ activations
class Activation(nn.Module):
    """A Keras activation by name (see the module docstring); softmax over the channel axis."""

    def __init__(self, name: str, keras3: bool):
        super().__init__()
        self.name, self.keras3 = name, keras3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = self.name
        if name == "relu":
            return F.relu(x)
        if name == "relu6":
            return F.relu6(x)
        if name == "sigmoid":
            return torch.sigmoid(x)
        if name == "tanh":
            return torch.tanh(x)
        if name == "softmax":
            return torch.softmax(x, dim=1)
        if name == "log_softmax":
            return torch.log_softmax(x, dim=1)
        if name == "elu":
            return F.elu(x)
        if name == "selu":
            return F.selu(x)
        if name == "softplus":
            return F.softplus(x)
        if name == "softsign":
            return F.softsign(x)
        if name in ("swish", "silu"):
            return F.silu(x)
        if name == "gelu":
            return F.gelu(x)
        if name == "exponential":
            return torch.exp(x)
        if name == "mish":
            return F.mish(x)
        if name in ("hard_swish", "hard_silu"):
            return x * F.relu6(x + 3) / 6
        if name == "hard_sigmoid":
            return F.relu6(x + 3) / 6 if self.keras3 else torch.clamp(0.2 * x + 0.5, 0, 1)
        if name == "leaky_relu":
            return F.leaky_relu(x, 0.2)  # the activation function's default slope
        raise AssertionError(name)  # names are checked when the network is built


ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "log_softmax", "elu", "selu",
               "softplus", "softsign", "swish", "silu", "gelu", "exponential", "mish", "hard_swish",
               "hard_silu", "hard_sigmoid", "leaky_relu")


class KerasRelu(nn.Module):
    """Keras's ReLU layer: max_value above max_value, x from threshold up, negative_slope (x - threshold) below."""

    def __init__(self, max_value, negative_slope: float, threshold: float):
        super().__init__()
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        return out if self.max_value is None else torch.clamp(out, max=self.max_value)


# ------------------------------------------------------------------------------------------------ layers
def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's "same" padding of one dimension: (before, after), the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride, dilation, value: float = 0.0) -> torch.Tensor:
    top, bottom = same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class KerasConv2d(nn.Conv2d):
    """nn.Conv2d with Keras's padding ("same" computed per input size); also the pointwise half of a
    SeparableConv2D (then `depthwise` runs first and takes the padding)."""

    def __init__(self, *args, same: bool, depthwise: nn.Conv2d | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.same = same
        self.depthwise = depthwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.depthwise if self.depthwise is not None else self
        if self.same:
            x = _pad_same(x, first.kernel_size, first.stride, first.dilation)
        if self.depthwise is not None:
            x = self.depthwise(x)
        return super().forward(x)


class KerasDense(nn.Linear):
    """nn.Linear on the last Keras axis (the channels of a map)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim > 2:
            return super().forward(x.movedim(1, -1)).movedim(-1, 1)
        return super().forward(x)


class Pool2d(nn.Module):
    """MaxPooling2D / AveragePooling2D with Keras's padding (see the module docstring)."""

    def __init__(self, kind: str, size, stride, same: bool):
        super().__init__()
        self.kind, self.size, self.stride, self.same = kind, tuple(size), tuple(stride), same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            if self.same:
                x = _pad_same(x, self.size, self.stride, (1, 1), value=float("-inf"))
            return F.max_pool2d(x, self.size, self.stride)
        if not self.same:
            return F.avg_pool2d(x, self.size, self.stride)
        ones = torch.ones_like(x[:1, :1])
        sums = F.avg_pool2d(_pad_same(x, self.size, self.stride, (1, 1)), self.size, self.stride)
        counts = F.avg_pool2d(_pad_same(ones, self.size, self.stride, (1, 1)), self.size, self.stride)
        return sums / counts


class GlobalPool(nn.Module):
    def __init__(self, kind: str, keepdims: bool):
        super().__init__()
        self.kind, self.keepdims = kind, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return x.amax(dim=(2, 3), keepdim=self.keepdims)
        return x.mean(dim=(2, 3), keepdim=self.keepdims)


class Flatten(nn.Module):
    """Keras's Flatten: NHWC order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -1).flatten(1) if x.ndim > 2 else x


class ZeroPad(nn.Module):
    def __init__(self, top: int, bottom: int, left: int, right: int):
        super().__init__()
        self.pads = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)


class Rescale(nn.Module):
    def __init__(self, scale, offset):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))
        self.register_buffer("offset", torch.as_tensor(np.asarray(offset, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.reshape(shape) + self.offset.reshape(shape)


class Merge(nn.Module):
    """Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate."""

    def __init__(self, kind: str, axis: int = -1):
        super().__init__()
        self.kind, self.axis = kind, axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.kind == "Concatenate":
            return torch.cat(xs, dim=keras_axis(self.axis, xs[0].ndim))
        if self.kind == "Subtract":
            return xs[0] - xs[1]
        out = xs[0]
        for x in xs[1:]:
            if self.kind in ("Add", "Average"):
                out = out + x
            elif self.kind == "Multiply":
                out = out * x
            elif self.kind == "Maximum":
                out = torch.maximum(out, x)
            else:
                out = torch.minimum(out, x)
        return out / len(xs) if self.kind == "Average" else out


class Softmax(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=keras_axis(self.axis, x.ndim))


class GreyInput(nn.Module):
    """A normalised RGB batch -> the normalised 1-channel luma (see the module docstring)."""

    def __init__(self, mean, std):
        super().__init__()
        luma = torch.tensor(LUMA, dtype=torch.float32)
        mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("luma", luma.view(1, 3, 1, 1), persistent=False)
        self.grey_mean, self.grey_std = float((luma * mean).sum()), float((luma * std).sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = ((x * self.std + self.mean) * self.luma).sum(dim=1, keepdim=True)
        return (grey - self.grey_mean) / self.grey_std


# ------------------------------------------------------------------------------------------------ building
@dataclass
class Built:
    op: nn.Module
    activation: str


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{what} {value!r}: expected an int or two ints")


def _activation_name(value, what: str = "activation") -> str:
    if value is None:
        return "linear"
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise ValueError(f"{what} {value!r}: expected one of {', '.join(ACTIVATIONS)}")
    return value


def _weights(layer: KerasLayer, names: list[str], shapes: list[tuple]) -> list[torch.Tensor]:
    """The layer's arrays as tensors, checked against the expected count and shapes."""
    if len(layer.weights) != len(names):
        raise ValueError(f"{len(layer.weights)} weight arrays in the file; expected {len(names)} "
                         f"({', '.join(names) or 'none'})")
    out = []
    for array, name, shape in zip(layer.weights, names, shapes):
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(array.shape)}; expected {tuple(shape)}")
        out.append(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
    return out


def _kernel_shape(layer: KerasLayer, index: int = 0) -> tuple:
    if len(layer.weights) <= index:
        raise ValueError(f"{len(layer.weights)} weight arrays in the file; expected a kernel")
    return tuple(layer.weights[index].shape)


def _build_conv(layer: KerasLayer, kind: str) -> nn.Module:
    config = layer.config
    kernel = _pair(config.get("kernel_size", 1), "kernel_size")
    stride = _pair(config.get("strides", 1), "strides")
    dilation = _pair(config.get("dilation_rate", 1), "dilation_rate")
    padding = config.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise ValueError(f"padding {padding!r}: expected 'valid' or 'same'")
    bias = bool(config.get("use_bias", True))
    same = padding == "same"
    if kind == "Conv2D":
        kh, kw, per_group, filters = _kernel_shape(layer)
        groups = int(config.get("groups", 1) or 1)
        names, shapes = ["kernel"], [(*kernel, per_group, filters)]
        if bias:
            names, shapes = names + ["bias"], shapes + [(filters,)]
        arrays = _weights(layer, names, shapes)
        conv = KerasConv2d(per_group * groups, filters, kernel, stride, dilation=dilation, groups=groups,
                           bias=bias, same=same)
        conv.weight.data.copy_(arrays[0].permute(3, 2, 0, 1))
    else:
        kh, kw, channels, multiplier = _kernel_shape(layer)
        depthwise = nn.Conv2d(channels, channels * multiplier, kernel, stride, dilation=dilation, groups=channels,
                              bias=kind == "DepthwiseConv2D" and bias)
        depthwise.weight.data.copy_(_depthwise(layer.weights[0]))
        if kind == "DepthwiseConv2D":
            names, shapes = ["depthwise_kernel"], [(*kernel, channels, multiplier)]
            if bias:
                names, shapes = names + ["bias"], shapes + [(channels * multiplier,)]
            arrays = _weights(layer, names, shapes)
            if bias:
                depthwise.bias.data.copy_(arrays[1])
            return _SameDepthwise(depthwise, same)
        filters = int(config.get("filters"))
        names = ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if bias else [])
        shapes = [(*kernel, channels, multiplier), (1, 1, channels * multiplier, filters)] + (
            [(filters,)] if bias else [])
        arrays = _weights(layer, names, shapes)
        conv = KerasConv2d(channels * multiplier, filters, 1, bias=bias, same=same, depthwise=depthwise)
        conv.weight.data.copy_(arrays[1].permute(3, 2, 0, 1))
    if bias:
        conv.bias.data.copy_(arrays[-1])
    return conv


def _depthwise(kernel: np.ndarray) -> torch.Tensor:
    """(kh, kw, in, m) -> (in * m, 1, kh, kw), output channel i * m + j (TensorFlow's order)."""
    kh, kw, channels, multiplier = kernel.shape
    flat = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32)).reshape(kh, kw, channels * multiplier)
    return flat.permute(2, 0, 1).unsqueeze(1).contiguous()


class _SameDepthwise(nn.Module):
    """DepthwiseConv2D: a grouped nn.Conv2d with Keras's padding."""

    def __init__(self, conv: nn.Conv2d, same: bool):
        super().__init__()
        self.conv, self.same = conv, same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = _pad_same(x, self.conv.kernel_size, self.conv.stride, self.conv.dilation)
        return self.conv(x)


def _build_batchnorm(layer: KerasLayer) -> nn.BatchNorm2d:
    config = layer.config
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, 3):
        raise ValueError(f"axis {axis!r}: expected the channel axis (-1)")
    scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
    channels = tuple(layer.weights[-1].shape)[0] if layer.weights else 0
    names = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean", "moving_variance"]
    arrays = dict(zip(names, _weights(layer, names, [(channels,)] * len(names))))
    norm = nn.BatchNorm2d(channels, eps=float(config.get("epsilon", 1e-3)),
                          momentum=1.0 - float(config.get("momentum", 0.99)))
    norm.weight.data.copy_(arrays.get("gamma", torch.ones(channels)))
    norm.bias.data.copy_(arrays.get("beta", torch.zeros(channels)))
    norm.running_mean.copy_(arrays["moving_mean"])
    norm.running_var.copy_(arrays["moving_variance"])
    return norm


def build_layer(layer: KerasLayer, keras3: bool) -> Built:
    kind, config = layer.kind, layer.config
    if config.get("data_format", "channels_last") not in ("channels_last", None):
        raise ValueError(f"data_format {config['data_format']!r}: expected channels_last")
    activation = _activation_name(config.get("activation")) if kind in ACTIVATED else "linear"
    if layer.weights and kind not in WEIGHTED:
        raise ValueError(f"{len(layer.weights)} weight arrays in the file; a {kind} layer has none")
    if kind in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
        return Built(_build_conv(layer, kind), activation)
    if kind == "Dense":
        units, inputs = int(config.get("units")), _kernel_shape(layer)[0]
        bias = bool(config.get("use_bias", True))
        arrays = _weights(layer, ["kernel"] + (["bias"] if bias else []),
                          [(inputs, units)] + ([(units,)] if bias else []))
        dense = KerasDense(inputs, units, bias=bias)
        dense.weight.data.copy_(arrays[0].T)
        if bias:
            dense.bias.data.copy_(arrays[1])
        return Built(dense, activation)
    if kind == "BatchNormalization":
        return Built(_build_batchnorm(layer), "linear")
    if kind == "Activation":
        return Built(nn.Identity(), activation)
    if kind == "ReLU":
        max_value, slope = config.get("max_value"), float(config.get("negative_slope", 0.0) or 0.0)
        return Built(KerasRelu(None if max_value is None else float(max_value), slope,
                                float(config.get("threshold", 0.0) or 0.0)), "linear")
    if kind == "LeakyReLU":
        slope = config.get("negative_slope", config.get("alpha", 0.3))
        return Built(nn.LeakyReLU(float(slope)), "linear")
    if kind == "Softmax":
        axis = config.get("axis", -1)
        if not isinstance(axis, int):
            raise ValueError(f"axis {axis!r}: expected one axis")
        return Built(Softmax(axis), "linear") if axis != -1 else Built(nn.Identity(), "softmax")
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        size = _pair(config.get("pool_size", 2), "pool_size")
        stride = _pair(config.get("strides") or size, "strides")
        padding = config.get("padding", "valid")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding {padding!r}: expected 'valid' or 'same'")
        return Built(Pool2d("max" if kind == "MaxPooling2D" else "avg", size, stride, padding == "same"), "linear")
    if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        kind_name = "max" if kind == "GlobalMaxPooling2D" else "avg"
        return Built(GlobalPool(kind_name, bool(config.get("keepdims", False))), "linear")
    if kind == "Flatten":
        return Built(Flatten(), "linear")
    if kind == "Dropout":
        return Built(nn.Dropout(float(config.get("rate", 0.0))), "linear")
    if kind == "SpatialDropout2D":
        return Built(nn.Dropout2d(float(config.get("rate", 0.0))), "linear")
    if kind == "ZeroPadding2D":
        return Built(ZeroPad(*_zero_padding(config.get("padding", 1))), "linear")
    if kind == "Rescaling":
        return Built(Rescale(config.get("scale", 1.0), config.get("offset", 0.0)), "linear")
    if kind in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"):
        expected = 2 if kind == "Subtract" else None
        if (expected and len(layer.inputs) != expected) or len(layer.inputs) < 2:
            raise ValueError(f"{len(layer.inputs)} inputs; expected {expected or 'two or more'}")
        return Built(Merge(kind, int(config.get("axis", -1))), "linear")
    if kind == "InputLayer":
        return Built(nn.Identity(), "linear")
    raise ValueError(f"layer type {kind!r} is not supported")


def _zero_padding(value) -> tuple[int, int, int, int]:
    if isinstance(value, int):
        return value, value, value, value
    rows, columns = value
    rows = (rows, rows) if isinstance(rows, int) else tuple(rows)
    columns = (columns, columns) if isinstance(columns, int) else tuple(columns)
    return int(rows[0]), int(rows[1]), int(columns[0]), int(columns[1])


def module_key(name: str, taken: set[str]) -> str:
    """A ModuleDict key for a Keras layer name: the name itself where it is a plain identifier."""
    key = re.sub(r"\W", "_", name) or "layer"
    while key in taken or hasattr(nn.ModuleDict, key):
        key += "_"
    taken.add(key)
    return key
