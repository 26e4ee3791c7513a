"""`kd.ops.conv2d_same` and `SameConv2D`: the values and both gradients of a
'same' convolution equal a direct numpy convolution, whichever way the kernel
gradient is computed (XLA's own, or matrix products on JAX)."""

import keras
import numpy as np
import pytest

from keras_dreamer import ops as kdops
from keras_dreamer.layers.common import SameConv2D
from tests.helpers import to_numpy
from tests.helpers import value_and_grad

JAX = keras.backend.backend() == "jax"


def numpy_conv_and_grads(x, kernel, out_grad):
    """`y = conv(x, K)` ('same', stride 1) and the gradients of `sum(y * g)`."""
    n, h, w, c = x.shape
    size = kernel.shape[0]
    lo = (size - 1) // 2
    hi = size - 1 - lo
    x = x.astype(np.float64)
    padded = np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    y = np.zeros((n, h, w, kernel.shape[-1]))
    k_grad = np.zeros(kernel.shape)
    padded_grad = np.zeros(padded.shape)
    for i in range(size):
        for j in range(size):
            window = padded[:, i : i + h, j : j + w, :]
            y += np.einsum("nhwc,cf->nhwf", window, kernel[i, j])
            k_grad[i, j] = np.einsum("nhwc,nhwf->cf", window, out_grad)
            padded_grad[:, i : i + h, j : j + w, :] += np.einsum(
                "nhwf,cf->nhwc", out_grad, kernel[i, j]
            )
    return y, padded_grad[:, lo : lo + h, lo : lo + w, :], k_grad


@pytest.mark.parametrize("mode", ["xla", "matmul"])
@pytest.mark.parametrize(
    "size, frames, channels, filters",
    [(5, 6, 3, 4), (4, 3, 3, 4), (3, 7, 3, 4), (5, 4, 4, 2), (4, 6, 5, 1)],
)
def test_conv_values_and_gradients_match_numpy(
    monkeypatch, mode, size, frames, channels, filters
):
    monkeypatch.setenv(kdops.CONV_GRAD_ENV, mode)
    if JAX:
        from keras_dreamer import jax_conv

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
    y = to_numpy(kdops.conv2d_same(x, kernel))
    _, (x_grad, k_grad) = value_and_grad(
        lambda: keras.ops.sum(kdops.conv2d_same(x_var, k_var) * out_grad),
        [x_var, k_var],
    )
    for got, want in zip((y, to_numpy(x_grad), to_numpy(k_grad)), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert kdops.matmul_kernel_grad(x.shape, kernel.shape) == (JAX and mode == "matmul")


def test_auto_uses_matrix_products_only_where_measured_faster(monkeypatch):
    monkeypatch.delenv(kdops.CONV_GRAD_ENV, raising=False)
    on_cpu = JAX and __import__("jax").default_backend() == "cpu"
    # size12m's second encoder layer and its decoder's 3-channel output
    # layer; small layers of the Catch config keep XLA's gradient.
    assert kdops.matmul_kernel_grad((1024, 32, 32, 32), (5, 5, 32, 48)) == on_cpu
    assert kdops.matmul_kernel_grad((1024, 64, 64, 32), (5, 5, 32, 3)) == on_cpu
    assert not kdops.matmul_kernel_grad((256, 16, 16, 12), (5, 5, 12, 16))
    assert not kdops.matmul_kernel_grad((1024, 8, 8, 16), (5, 5, 16, 16))
    # Unknown batch size (symbolic build): Keras's own convolution.
    assert not kdops.matmul_kernel_grad((None, 32, 32, 32), (5, 5, 32, 48))


def test_a_bad_conv_grad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv(kdops.CONV_GRAD_ENV, "fast")
    with pytest.raises(ValueError, match="KERAS_DREAMER_CONV_GRAD='fast'.*auto, xla"):
        kdops.conv2d_same(np.zeros((1, 4, 4, 1), "float32"), np.ones((3, 3, 1, 1)))


@pytest.mark.parametrize("padding, strides", [("same", 1), ("valid", 1), ("same", 2)])
def test_same_conv2d_equals_keras_conv2d(monkeypatch, padding, strides):
    monkeypatch.setenv(kdops.CONV_GRAD_ENV, "matmul")
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
