"""`kd.layers.conv.conv2d_same` and `SameConv2D`: the values and both gradients of a
'same' convolution equal a direct numpy convolution, whichever way the kernel
gradient is computed (XLA's own, or matrix products on JAX).
`kd.layers.conv.upsample_conv2d_same` and `UpsampleConv2D`: the same for a nearest 2x
upsampling followed by a 'same' convolution; `kd.layers.conv.conv2d_same_pooled_blocks`
and `PoolConv2D` for a 'same' convolution followed by 2x2 max pooling."""

import logging

import keras
import numpy as np
import pytest

from keras_dreamer import backend
from keras_dreamer.backend import common as backend_common
from keras_dreamer.layers import common
from keras_dreamer.layers import conv as kdconv
from keras_dreamer.layers.common import PoolConv2D
from keras_dreamer.layers.common import SameConv2D
from keras_dreamer.layers.common import UpsampleConv2D
from tests.helpers import to_numpy
from tests.helpers import value_and_grad

JAX = keras.backend.backend() == "jax"


def numpy_conv_and_grads(x, kernel, out_grad):
    """`y = conv(x, K)` ('same', stride 1) and the gradients of `sum(y * g)`."""
    n, h, w, c = x.shape
    kh, kw = kernel.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    x = x.astype(np.float64)
    padded = np.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
    y = np.zeros((n, h, w, kernel.shape[-1]))
    k_grad = np.zeros(kernel.shape)
    padded_grad = np.zeros(padded.shape)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, i : i + h, j : j + w, :]
            y += np.einsum("nhwc,cf->nhwf", window, kernel[i, j])
            k_grad[i, j] = np.einsum("nhwc,nhwf->cf", window, out_grad)
            padded_grad[:, i : i + h, j : j + w, :] += np.einsum(
                "nhwf,cf->nhwc", out_grad, kernel[i, j]
            )
    return y, padded_grad[:, top : top + h, left : left + w, :], k_grad


@pytest.mark.parametrize("mode", ["xla", "matmul"])
@pytest.mark.parametrize(
    "size, frames, channels, filters",
    [(5, 6, 3, 4), (4, 3, 3, 4), (3, 7, 3, 4), (5, 4, 4, 2), (4, 6, 5, 1)],
)
def test_conv_values_and_gradients_match_numpy(
    monkeypatch, mode, size, frames, channels, filters
):
    monkeypatch.setenv(backend_common.CONV_GRAD_ENV, mode)
    if JAX:
        from keras_dreamer.backend import jax_conv

        # Chunks of two frames, so the kernel gradient adds several chunks.
        monkeypatch.setattr(jax_conv, "CHUNK_ROWS", 2 * 6 * 5)
    rng = np.random.default_rng(size)
    # Widening layers take patches of the input, narrowing ones of the
    # output gradient.
    x = rng.normal(size=(frames, 6, 5, channels)).astype(np.float32)
    kernel = rng.normal(size=(size, size, channels, filters)).astype(np.float32)
    out_grad = rng.normal(size=(frames, 6, 5, filters)).astype(np.float32)
    expected = numpy_conv_and_grads(x, kernel, out_grad)
    x_var, k_var = keras.Variable(x), keras.Variable(kernel)
    y = to_numpy(kdconv.conv2d_same(x, kernel))
    _, (x_grad, k_grad) = value_and_grad(
        lambda: keras.ops.sum(
            keras.ops.multiply(kdconv.conv2d_same(x_var, k_var), out_grad)
        ),
        [x_var, k_var],
    )
    for got, want in zip((y, to_numpy(x_grad), to_numpy(k_grad)), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    matmul = backend.matmul_kernel_grad(x.shape, kernel.shape)
    assert matmul == (JAX and mode == "matmul")


def test_auto_uses_matrix_products_only_where_measured_faster(monkeypatch):
    monkeypatch.delenv(backend_common.CONV_GRAD_ENV, raising=False)
    on_cpu = JAX and backend.on_cpu()
    # size12m's second encoder layer and its decoder's 3-channel output
    # layer; small layers of the Catch config keep XLA's gradient.
    assert backend.matmul_kernel_grad((1024, 32, 32, 32), (5, 5, 32, 48)) == on_cpu
    assert backend.matmul_kernel_grad((1024, 64, 64, 32), (5, 5, 32, 3)) == on_cpu
    assert not backend.matmul_kernel_grad((256, 16, 16, 12), (5, 5, 12, 16))
    assert not backend.matmul_kernel_grad((1024, 8, 8, 16), (5, 5, 16, 16))
    # Unknown batch size (symbolic build): Keras's own convolution.
    assert not backend.matmul_kernel_grad((None, 32, 32, 32), (5, 5, 32, 48))


def test_a_bad_conv_grad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv(backend_common.CONV_GRAD_ENV, "fast")
    with pytest.raises(ValueError, match="KERAS_DREAMER_CONV_GRAD='fast'.*auto, xla"):
        kdconv.conv2d_same(np.zeros((1, 4, 4, 1), "float32"), np.ones((3, 3, 1, 1)))


@pytest.mark.parametrize("padding, strides", [("same", 1), ("valid", 1), ("same", 2)])
def test_same_conv2d_equals_keras_conv2d(monkeypatch, padding, strides):
    monkeypatch.setenv(backend_common.CONV_GRAD_ENV, "matmul")
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    ours = SameConv2D(5, 3, padding=padding, strides=strides)
    theirs = keras.layers.Conv2D(5, 3, padding=padding, strides=strides)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(theirs(x)), rtol=1e-5)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(ours)
    )
    assert type(restored) is SameConv2D
    assert restored.get_config() == ours.get_config()


@pytest.mark.parametrize("mode", ["xla", "matmul"])
@pytest.mark.parametrize(
    "kernel_size, channels, filters",
    [
        ((5, 5), 3, 4),
        ((5, 5), 4, 1),
        ((3, 3), 2, 3),
        ((4, 4), 3, 2),
        ((2, 2), 2, 2),
        ((1, 1), 3, 2),
        ((6, 6), 2, 3),
        ((5, 3), 3, 2),
    ],
)
def test_upsample_conv_values_and_gradients_match_numpy(
    monkeypatch, mode, kernel_size, channels, filters
):
    monkeypatch.setenv(backend_common.CONV_GRAD_ENV, mode)
    rng = np.random.default_rng(sum(kernel_size) + channels)
    x = rng.normal(size=(3, 4, 5, channels)).astype(np.float32)
    kernel = rng.normal(size=(*kernel_size, channels, filters)).astype(np.float32)
    out_grad = rng.normal(size=(3, 8, 10, filters)).astype(np.float32)
    # The definition: repeat every pixel in a 2x2 block, then convolve; the
    # input gradient sums the upsampled image's gradient over each block.
    upsampled = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    y, up_grad, k_grad = numpy_conv_and_grads(upsampled, kernel, out_grad)
    x_grad = up_grad.reshape(3, 4, 2, 5, 2, channels).sum(axis=(2, 4))
    x_var, k_var = keras.Variable(x), keras.Variable(kernel)
    got = to_numpy(kdconv.upsample_conv2d_same(x, kernel))
    _, grads = value_and_grad(
        lambda: keras.ops.sum(
            keras.ops.multiply(kdconv.upsample_conv2d_same(x_var, k_var), out_grad)
        ),
        [x_var, k_var],
    )
    for name, value, want in zip(
        ("values", "input gradient", "kernel gradient"),
        (got, *to_numpy(grads)),
        (y, x_grad, k_grad),
    ):
        np.testing.assert_allclose(value, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_upsample_conv2d_equals_keras_upsampling_then_conv2d():
    x = np.random.default_rng(1).normal(size=(2, 4, 6, 3)).astype(np.float32)
    ours = UpsampleConv2D(4, 5, padding="same", activation="silu")
    theirs = keras.Sequential(
        [
            keras.layers.UpSampling2D(2, interpolation="nearest"),
            keras.layers.Conv2D(4, 5, padding="same", activation="silu"),
        ]
    )
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    want = to_numpy(theirs(x))
    assert want.shape == (2, 8, 12, 4) == ours.compute_output_shape(x.shape)
    np.testing.assert_allclose(to_numpy(ours(x)), want, rtol=1e-4, atol=1e-5)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(ours)
    )
    assert type(restored) is UpsampleConv2D
    assert restored.get_config() == ours.get_config()


@pytest.mark.parametrize(
    "kwargs", [{"padding": "valid"}, {"strides": 2}, {"dilation_rate": 2}]
)
def test_upsample_conv2d_rejects_what_it_cannot_fold(kwargs):
    arguments = {"padding": "same", **kwargs}
    with pytest.raises(ValueError, match="UpsampleConv2D 'up'.*padding='same'"):
        UpsampleConv2D(4, 5, name="up", **arguments)


@pytest.mark.parametrize("mode", ["xla", "matmul"])
@pytest.mark.parametrize(
    "kernel_size, channels, filters",
    [
        ((5, 5), 3, 4),
        ((3, 3), 1, 2),
        ((4, 4), 3, 2),
        ((2, 2), 2, 3),
        ((1, 1), 3, 2),
        ((6, 6), 2, 2),
        ((5, 3), 4, 3),
    ],
)
def test_pooled_conv_values_and_gradients_match_numpy(
    monkeypatch, mode, kernel_size, channels, filters
):
    monkeypatch.setenv(backend_common.CONV_GRAD_ENV, mode)
    rng = np.random.default_rng(sum(kernel_size) * channels)
    x = rng.normal(size=(3, 8, 6, channels)).astype(np.float32)
    kernel = rng.normal(size=(*kernel_size, channels, filters)).astype(np.float32)
    out_grad = rng.normal(size=(3, 4, 3, filters)).astype(np.float32)
    # The definition: the convolution, then the max of each 2x2 block; the
    # gradient flows through each block's maximum.
    conv = numpy_conv_and_grads(x, kernel, np.zeros((3, 8, 6, filters)))[0]
    blocks = conv.reshape(3, 4, 2, 3, 2, filters)
    pooled = blocks.max(axis=(2, 4))
    is_max = blocks == pooled[:, :, None, :, None, :]
    conv_grad = (is_max * out_grad[:, :, None, :, None, :]).reshape(conv.shape)
    _, x_grad, k_grad = numpy_conv_and_grads(x, kernel, conv_grad)

    def pooled_conv(x, kernel):
        return keras.ops.max(kdconv.conv2d_same_pooled_blocks(x, kernel), axis=3)

    x_var, k_var = keras.Variable(x), keras.Variable(kernel)
    got = to_numpy(pooled_conv(x, kernel))
    _, grads = value_and_grad(
        lambda: keras.ops.sum(keras.ops.multiply(pooled_conv(x_var, k_var), out_grad)),
        [x_var, k_var],
    )
    for name, value, want in zip(
        ("values", "input gradient", "kernel gradient"),
        (got, *to_numpy(grads)),
        (pooled, x_grad, k_grad),
    ):
        np.testing.assert_allclose(value, want, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("on_blocks", [True, False])  # space-to-depth, plain
@pytest.mark.parametrize("channels", [3, 6])
def test_pool_conv2d_equals_keras_conv2d_then_max_pooling(
    monkeypatch, on_blocks, channels
):
    monkeypatch.setattr(common, "pool_conv_on_blocks", lambda *shape: on_blocks)
    x = np.random.default_rng(2).normal(size=(2, 8, 12, channels)).astype(np.float32)
    ours = PoolConv2D(4, 5, padding="same", activation="silu")
    theirs = keras.Sequential(
        [
            keras.layers.Conv2D(4, 5, padding="same", activation="silu"),
            keras.layers.MaxPooling2D(2),
        ]
    )
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    want = to_numpy(theirs(x))
    assert want.shape == (2, 4, 6, 4) == ours.compute_output_shape(x.shape)
    np.testing.assert_allclose(to_numpy(ours(x)), want, rtol=1e-4, atol=1e-5)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(ours)
    )
    assert type(restored) is PoolConv2D
    assert restored.get_config() == ours.get_config()


@pytest.mark.parametrize(
    "kwargs", [{"padding": "valid"}, {"strides": 2}, {"dilation_rate": 2}]
)
def test_pool_conv2d_rejects_what_it_cannot_fold(kwargs):
    arguments = {"padding": "same", **kwargs}
    with pytest.raises(ValueError, match="PoolConv2D 'pooled'.*padding='same'"):
        PoolConv2D(4, 5, name="pooled", **arguments)


def test_pool_conv_on_blocks_follows_the_measured_rule_and_logs_it_once(caplog):
    # The rule measured with benchmarks/pool_conv.py (RESULTS.md): on a JAX
    # CPU, inputs of >= 32x32 pixels or <= 4 channels; on a TensorFlow CPU,
    # inputs of <= 16 channels; on an accelerator, images (<= 4 channels);
    # on PyTorch, images (<= 4 channels) everywhere.
    def expected(height, width, channels):
        if not backend.on_cpu() or backend.NAME == "torch":
            return channels <= 4
        if JAX:
            return channels <= 4 or height * width >= 32 * 32
        return channels <= 16

    shapes = [(64, 64, 3), (8, 8, 3), (32, 32, 32), (64, 64, 64), (16, 16, 12)]
    shapes += [(16, 16, 48), (8, 8, 64), (32, 16, 24)]
    backend_common._logged.discard("pool")
    with caplog.at_level(logging.INFO, logger="keras_dreamer"):
        chosen = {shape: kdconv.pool_conv_on_blocks(*shape) for shape in shapes}
    assert chosen == {shape: expected(*shape) for shape in shapes}
    assert len(set(chosen.values())) == 2
    logged = [r.getMessage() for r in caplog.records]
    assert len([m for m in logged if "space-to-depth" in m]) == 1, logged
