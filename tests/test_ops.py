import keras
import numpy as np
import pytest
from keras import ops

from keras_dreamer import backend
from keras_dreamer import ops as kdops
from tests.helpers import value_and_grad


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_symlog_symexp_are_inverse():
    x = np.array([-1e6, -1e3, -2.5, -1e-3, 0.0, 1e-3, 0.7, 42.0, 1e5], np.float32)
    np.testing.assert_allclose(np_(kdops.symexp(kdops.symlog(x))), x, rtol=1e-5)
    expected = np.sign(x) * np.log1p(np.abs(x))
    np.testing.assert_allclose(np_(kdops.symlog(x)), expected, rtol=1e-6)


def test_twohot_bins_match_reference_layout():
    bins = kdops.twohot_bins(255)
    assert bins.shape == (255,)
    assert bins[127] == 0.0
    np.testing.assert_array_equal(bins[:127], -bins[128:][::-1])
    assert np.all(np.diff(bins) > 0)
    np.testing.assert_allclose(bins[0], -np.expm1(20.0), rtol=1e-6)
    np.testing.assert_allclose(bins[126], -np.expm1(20.0 / 127), rtol=1e-5)


@pytest.mark.parametrize("num_bins", [255, 5])
def test_twohot_encode_decode_round_trip(num_bins):
    bins = kdops.twohot_bins(num_bins)
    x = np.concatenate(
        [np.linspace(-1e4, 1e4, 101), [-3.3, -1.0, -1e-4, 0.0, 1e-4, 0.5, 1.0, 7.7]]
    ).astype(np.float32)
    code = np_(kdops.twohot_encode(x, bins))
    np.testing.assert_allclose(code.sum(-1), 1.0, rtol=1e-6)
    assert ((code > 0).sum(-1) <= 2).all()
    decoded = (code.astype(np.float64) * bins).sum(-1)
    np.testing.assert_allclose(decoded, x, rtol=1e-5, atol=1e-5)
    # Decoding from logits: log of the code recovers the value too.
    logits = np.log(np.maximum(code, 1e-30))
    np.testing.assert_allclose(
        np_(kdops.twohot_mean(logits, bins)), x, rtol=1e-4, atol=1e-4
    )


def test_twohot_mean_is_exactly_zero_for_uniform_logits():
    bins = kdops.twohot_bins(255)
    assert float(np_(kdops.twohot_mean(np.zeros((3, 255), np.float32), bins))[0]) == 0.0


def test_twohot_loss_is_cross_entropy():
    # The 5 bins written out by hand: symexp of linspace(-20, 0, 3), mirrored.
    big, small = np.expm1(20.0), np.expm1(10.0)
    bins = np.array([-big, -small, 0.0, small, big], np.float32)
    np.testing.assert_allclose(kdops.twohot_bins(5), bins, rtol=1e-6)
    logits = np.array([[0.1, 0.2, -0.3, 1.0, 0.0]], np.float32)
    target = np.array([0.5], np.float32)
    # The two-hot code of 0.5 written out by hand: it lies between the bins
    # 0 (index 2) and symexp(10) (index 3), with weights by distance.
    upper = 0.5 / small
    code = np.array([[0.0, 0.0, 1.0 - upper, upper, 0.0]], np.float32)
    expected = -(code * (logits - np.log(np.exp(logits).sum(-1, keepdims=True)))).sum(
        -1
    )
    np.testing.assert_allclose(
        np_(kdops.twohot_loss(logits, target, bins)), expected, rtol=1e-5
    )


def test_unimix_probabilities():
    logits = np.array([[50.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    probs = np.exp(np_(kdops.unimix_logits(logits, 0.01)))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        probs[0], [0.99 + 0.0025, 0.0025, 0.0025, 0.0025], rtol=1e-5
    )
    np.testing.assert_allclose(probs[1], 0.25, rtol=1e-6)
    assert probs.min() >= 0.01 / 4 * (1 - 1e-6)


def test_sample_onehot_follows_the_distribution():
    logits = np.log(np.array([0.1, 0.2, 0.7], np.float32))
    noise = np.random.default_rng(0).uniform(size=(20000, 3)).astype(np.float32)
    samples = np_(kdops.sample_onehot(np.broadcast_to(logits, (20000, 3)), noise))
    np.testing.assert_array_equal(samples.sum(-1), 1.0)
    np.testing.assert_allclose(samples.mean(0), [0.1, 0.2, 0.7], atol=0.015)


def test_straight_through_gradient_is_nonzero():
    logits = keras.Variable(np.array([[0.3, -0.2, 0.5]], np.float32))
    noise = np.array([[0.2, 0.7, 0.4]], np.float32)
    weights = np.array([[1.0, 2.0, 3.0]], np.float32)

    def fn():
        return ops.sum(ops.multiply(kdops.sample_onehot(logits, noise), weights))

    _, (grad,) = value_and_grad(fn, [logits])
    grad = np_(grad)
    assert np.abs(grad).sum() > 1e-3
    probs = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum()
    expected = probs * (weights - (probs * weights).sum())  # d(sum(p * w)) / dlogits
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_categorical_kl_and_entropy():
    p = np.log(np.array([[0.5, 0.25, 0.25]], np.float32))
    q = np.log(np.array([[0.25, 0.5, 0.25]], np.float32))
    expected = 0.5 * np.log(2) + 0.25 * np.log(0.5)
    np.testing.assert_allclose(np_(kdops.categorical_kl(p, q)), [expected], rtol=1e-5)
    np.testing.assert_allclose(np_(kdops.categorical_kl(p, p)), [0.0], atol=1e-7)
    np.testing.assert_allclose(
        np_(kdops.categorical_entropy(p)), [1.5 * np.log(2)], rtol=1e-5
    )


def test_binary_logprob_with_soft_target():
    logits = np.array([0.0, 2.0], np.float32)
    target = np.array([0.997, 0.0], np.float32)
    sig = 1 / (1 + np.exp(-logits))
    expected = target * np.log(sig) + (1 - target) * np.log(1 - sig)
    np.testing.assert_allclose(
        np_(kdops.binary_logprob(logits, target)), expected, rtol=1e-5
    )


def _cumulative_step(carry, x):
    total = carry["total"] + x["value"] * carry["scale"]
    return {"total": total, "scale": carry["scale"]}, {
        "total": total,
        "double": 2 * total,
    }


def test_scan_matches_a_python_loop():
    xs = {"value": np.arange(12, dtype=np.float32).reshape(4, 3)}
    init = {"total": np.zeros(3, np.float32), "scale": np.full(3, 0.5, np.float32)}
    carry, ys = backend.scan(_cumulative_step, init, xs)
    expected_total = np.cumsum(xs["value"] * 0.5, 0)
    np.testing.assert_allclose(np_(ys["total"]), expected_total)
    np.testing.assert_allclose(np_(ys["double"]), 2 * expected_total)
    np.testing.assert_allclose(np_(carry["total"]), expected_total[-1])


def test_scan_of_length_one():
    xs = {"value": np.ones((1, 2), np.float32)}
    init = {"total": np.zeros(2, np.float32), "scale": np.ones(2, np.float32)}
    carry, ys = backend.scan(_cumulative_step, init, xs)
    assert tuple(ys["total"].shape) == (1, 2)


def test_scan_gradient_compiles_under_xla():
    weight = keras.Variable(np.full((3,), 0.9, np.float32))
    xs = np.ones((5, 3), np.float32)

    def fn():
        def step(carry, x):
            new = carry * weight + x
            return new, new

        _, ys = backend.scan(step, ops.zeros((3,)), xs)
        return ops.sum(ys)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def compiled():
            with tf.GradientTape() as tape:
                value = fn()
            return value, tape.gradient(value, weight)

        value, grad = compiled()
    elif keras.backend.backend() == "jax":
        import jax

        value, (grad,) = jax.jit(lambda: value_and_grad(fn, [weight]))()
    else:  # torch runs the loop eagerly: nothing to compile
        value, (grad,) = value_and_grad(fn, [weight])
    # d/dw of sum_t h_t with h_t = w h_{t-1} + 1, w = 0.9.
    w, h, dh, total, dtotal = 0.9, 0.0, 0.0, 0.0, 0.0
    for _ in range(5):
        dh = h + w * dh
        h = w * h + 1
        total, dtotal = total + h, dtotal + dh
    np.testing.assert_allclose(np_(value), 3 * total, rtol=1e-5)
    np.testing.assert_allclose(np_(grad), dtotal, rtol=1e-5)


def test_block_matmul_values_and_gradients_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 4, 6)).astype(np.float32)
    out_grad = rng.normal(size=(5, 3, 6)).astype(np.float32)
    want = np.einsum("ngi,gio->ngo", x.astype(np.float64), kernel)
    np.testing.assert_allclose(
        ops.convert_to_numpy(backend.block_matmul(x, kernel)), want, rtol=1e-5
    )
    x_var, k_var = keras.Variable(x), keras.Variable(kernel)
    _, (x_grad, k_grad) = value_and_grad(
        lambda: ops.sum(ops.multiply(backend.block_matmul(x_var, k_var), out_grad)),
        [x_var, k_var],
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(x_grad),
        np.einsum("ngo,gio->ngi", out_grad, kernel),
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(k_grad),
        np.einsum("ngi,ngo->gio", x, out_grad),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "name, home",
    [
        ("scan", "keras_dreamer.backend"),
        ("block_matmul", "keras_dreamer.backend"),
        ("conv2d_same", "keras_dreamer.layers.conv"),
        ("upsample_conv2d_same", "keras_dreamer.layers.conv"),
        ("pool_conv_on_blocks", "keras_dreamer.layers.conv"),
        ("log_once", "keras_dreamer.backend.common"),
        ("CONV_GRAD_ENV", "keras_dreamer.backend.common"),
    ],
)
def test_names_that_moved_out_of_ops_still_work(name, home):
    import importlib

    assert getattr(kdops, name) is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        kdops.nothing  # noqa: B018
