"""Backend-agnostic math for the world model.

Everything here is written with `keras.ops`, so it runs on JAX and TensorFlow.
The places where the backends must differ in model code (the XLA-safe
`scan` on TensorFlow, the convolution's kernel gradient on JAX CPUs) live in
this module. Train-step plumbing (compiled
functions, optimizer logs) is in `keras_dreamer.fitting`.
"""

import logging
import os

import numpy as np
from keras import backend as keras_backend
from keras import ops

_TINY = 1e-20
CONV_GRAD_ENV = "KERAS_DREAMER_CONV_GRAD"
CONV_GRAD_MODES = ("auto", "xla", "matmul")
_logger = logging.getLogger("keras_dreamer")
_logged = set()


def backend():
    """The active Keras backend name ("jax" or "tensorflow").

    Returns:
        The value of `keras.backend.backend()`.

    Examples:
        >>> import keras
        >>> backend() == keras.backend.backend()
        True
    """
    return keras_backend.backend()


def symlog(x):
    """`sign(x) * log(1 + |x|)`: compresses large magnitudes, identity near 0.

    Args:
        x: a float tensor or array.

    Returns:
        A tensor of the same shape.

    Examples:
        >>> import numpy as np
        >>> np.asarray(symlog(np.float32([-9.0, 0.0, 99.0])), float).round(3).tolist()
        [-2.303, 0.0, 4.605]
    """
    return ops.sign(x) * ops.log1p(ops.abs(x))


def symexp(x):
    """The inverse of `symlog`: `sign(x) * (exp(|x|) - 1)`.

    Args:
        x: values in symlog space (a float tensor or array).

    Returns:
        The raw values, a tensor of the same shape.

    Examples:
        >>> import numpy as np
        >>> x = np.float32([-9.0, 99.0])
        >>> np.asarray(symexp(symlog(x)), float).round(3).tolist()
        [-9.0, 99.0]
    """
    return ops.sign(x) * ops.expm1(ops.abs(x))


# ----------------------------------------------------------------------------
# Two-hot regression over symexp-spaced bins.


def twohot_bins(num_bins=255, low=-20.0):
    """DreamerV3's symmetric two-hot bins, as a float32 numpy array.

    The negative half is `symexp(linspace(low, 0, (num_bins + 1) // 2))`; the
    positive half mirrors it, so the middle bin is exactly 0 and the bins are
    symexp-spaced in raw value space.

    Args:
        num_bins: odd number of bins (255 in DreamerV3).
        low: symlog of the most negative bin.

    Returns:
        np.ndarray of shape `(num_bins,)`, ascending.

    Raises:
        ValueError: `num_bins` is even or smaller than 3.

    Examples:
        >>> bins = twohot_bins(255)
        >>> bins.shape, float(bins[127]), float(bins[0]) == -float(bins[-1])
        ((255,), 0.0, True)
        >>> twohot_bins(5, low=-2.0).astype(float).round(3).tolist()
        [-6.389, -1.718, 0.0, 1.718, 6.389]
    """
    if num_bins < 3 or num_bins % 2 == 0:
        raise ValueError(f"num_bins must be odd and >= 3, got {num_bins}.")
    half = np.linspace(low, 0.0, (num_bins + 1) // 2, dtype=np.float64)
    half = np.sign(half) * np.expm1(np.abs(half))
    bins = np.concatenate([half, -half[:-1][::-1]])
    return bins.astype(np.float32)


def twohot_encode(x, bins):
    """Two-hot target for values `x` on `bins`, interpolating in raw space.

    Args:
        x: float tensor of any shape.
        bins: ascending bin values, shape `(K,)`.

    Returns:
        Float32 tensor of shape `x.shape + (K,)` whose last axis sums to 1 and
        whose expectation over `bins` equals `x` (clipped to the bin range).

    Examples:
        >>> import numpy as np
        >>> code = twohot_encode(np.float32([0.5]), np.float32([-1.0, 0.0, 1.0]))
        >>> np.asarray(code).tolist()
        [[0.0, 0.5, 0.5]]
    """
    x = ops.cast(x, "float32")
    bins = ops.convert_to_tensor(bins, "float32")
    num = bins.shape[0]
    xe = ops.expand_dims(x, -1)
    below = ops.sum(ops.cast(bins <= xe, "int32"), -1) - 1
    above = num - ops.sum(ops.cast(bins > xe, "int32"), -1)
    below = ops.clip(below, 0, num - 1)
    above = ops.clip(above, 0, num - 1)
    equal = ops.equal(below, above)
    dist_below = ops.where(equal, 1.0, ops.abs(ops.take(bins, below) - x))
    dist_above = ops.where(equal, 1.0, ops.abs(ops.take(bins, above) - x))
    total = dist_below + dist_above
    weight_below = dist_above / total
    weight_above = dist_below / total
    return ops.one_hot(below, num) * ops.expand_dims(weight_below, -1) + ops.one_hot(
        above, num
    ) * ops.expand_dims(weight_above, -1)


def twohot_mean(logits, bins):
    """Expected value of a two-hot distribution, summed symmetrically.

    The middle bin plus the mirrored halves are added pairwise so that uniform
    probabilities (zero logits, as at initialisation) give exactly 0.

    Args:
        logits: float tensor `[..., K]`.
        bins: the bins, shape `(K,)`, symmetric around the middle one.

    Returns:
        Float32 tensor `[...]`.

    Examples:
        >>> import numpy as np
        >>> bins = twohot_bins(255)
        >>> float(np.asarray(twohot_mean(np.zeros((255,), "float32"), bins)))
        0.0
        >>> logits = np.log(np.asarray(twohot_encode(np.float32(3.0), bins)) + 1e-30)
        >>> round(float(np.asarray(twohot_mean(logits, bins))), 4)
        3.0
    """
    probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    bins = ops.convert_to_tensor(bins, "float32")
    mid = (bins.shape[0] - 1) // 2
    weighted = probs * bins
    lower = ops.flip(weighted[..., :mid], axis=-1)
    upper = weighted[..., mid + 1 :]
    return ops.sum(lower + upper, -1) + weighted[..., mid]


def twohot_loss(logits, target, bins):
    """Cross-entropy between `softmax(logits)` and the two-hot code of `target`.

    The reward loss of DreamerV3; no gradient flows into the target code.

    Args:
        logits: float tensor `[..., K]`.
        target: float tensor `[...]` of raw (not symlog) values.
        bins: the bins, shape `(K,)`.

    Returns:
        Float32 tensor `[...]`.

    Examples:
        >>> import numpy as np
        >>> bins = np.float32([-1.0, 0.0, 1.0])
        >>> loss = twohot_loss(np.zeros((3,), "float32"), np.float32(0.0), bins)
        >>> round(float(np.asarray(loss)), 4)  # log(3): uniform prediction
        1.0986
    """
    code = twohot_encode(target, bins)
    logp = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return -ops.sum(ops.stop_gradient(code) * logp, -1)


# ----------------------------------------------------------------------------
# Categorical latents.


def unimix_logits(logits, unimix=0.01):
    """Log-probabilities of `(1 - unimix) * softmax(logits) + unimix / K`.

    Computed in float32; the result is normalised (a valid log-probability).

    Args:
        logits: float tensor `[..., K]`.
        unimix: weight of the uniform mixture (0 disables it).

    Returns:
        Float32 log-probabilities `[..., K]`.

    Examples:
        >>> import numpy as np
        >>> logits = np.float32([0.0, -1e9])  # all mass on class 0
        >>> np.exp(np.asarray(unimix_logits(logits, 0.01), float)).round(3).tolist()
        [0.995, 0.005]
    """
    logits = ops.cast(logits, "float32")
    if not unimix:
        return ops.log_softmax(logits, axis=-1)
    probs = ops.softmax(logits, axis=-1)
    classes = logits.shape[-1]
    probs = (1.0 - unimix) * probs + unimix / classes
    return ops.log(probs)


def straight_through(onehot, logits):
    """`onehot` in the forward pass, the gradient of `softmax(logits)` backward.

    Computes `onehot + probs - stop_gradient(probs)` with
    `probs = softmax(logits)`.

    Args:
        onehot: float32 one-hot tensor `[..., K]`.
        logits: float tensor `[..., K]`.

    Returns:
        Float32 tensor equal to `onehot` whose gradient is that of `probs`.

    Examples:
        >>> import numpy as np
        >>> sample = straight_through(np.float32([0, 1]), np.float32([0.0, 0.0]))
        >>> np.asarray(sample).tolist()
        [0.0, 1.0]
    """
    probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    return onehot + (probs - ops.stop_gradient(probs))


def sample_onehot(logits, noise):
    """Straight-through one-hot sample of categorical `logits`.

    The sample is drawn by the Gumbel-max trick from `noise`, uniform in
    [0, 1) and drawn before any loop, so this function has no random state
    and is safe inside `scan` on every backend.

    Args:
        logits: float tensor `[..., K]` (normalised or not).
        noise: uniform noise of the same shape as `logits`.

    Returns:
        Float32 one-hot tensor `[..., K]` with straight-through gradients.

    Examples:
        >>> import numpy as np
        >>> logits = np.float32([[0.0, 5.0, 0.0]])
        >>> noise = np.random.default_rng(0).uniform(size=(1, 3))
        >>> np.asarray(sample_onehot(logits, noise)).tolist()
        [[0.0, 1.0, 0.0]]
    """
    logits = ops.cast(logits, "float32")
    noise = ops.clip(ops.cast(noise, "float32"), _TINY, 1.0 - 1e-7)
    gumbel = -ops.log(-ops.log(noise))
    index = ops.argmax(ops.stop_gradient(logits) + gumbel, axis=-1)
    onehot = ops.one_hot(index, logits.shape[-1], dtype="float32")
    return straight_through(onehot, logits)


def mode_onehot(logits):
    """Straight-through one-hot of the most likely class.

    Args:
        logits: float tensor `[..., K]`.

    Returns:
        Float32 one-hot tensor `[..., K]` with straight-through gradients.

    Examples:
        >>> import numpy as np
        >>> np.asarray(mode_onehot(np.float32([0.1, 2.0, -1.0]))).tolist()
        [0.0, 1.0, 0.0]
    """
    logits = ops.cast(logits, "float32")
    index = ops.argmax(logits, axis=-1)
    return straight_through(
        ops.one_hot(index, logits.shape[-1], dtype="float32"), logits
    )


def categorical_kl(p_logits, q_logits):
    """`KL(p || q)` over the last axis, for (possibly unnormalised) logits.

    Args:
        p_logits: float tensor `[..., K]`.
        q_logits: float tensor `[..., K]`.

    Returns:
        Float32 tensor `[...]`, non-negative.

    Examples:
        >>> import numpy as np
        >>> p = np.log(np.float32([0.5, 0.5]))
        >>> q = np.log(np.float32([0.9, 0.1]))
        >>> round(float(np.asarray(categorical_kl(p, q))), 4)
        0.5108
    """
    logp = ops.log_softmax(ops.cast(p_logits, "float32"), axis=-1)
    logq = ops.log_softmax(ops.cast(q_logits, "float32"), axis=-1)
    return ops.sum(ops.exp(logp) * (logp - logq), -1)


def categorical_entropy(logits):
    """Entropy over the last axis, for (possibly unnormalised) logits.

    Args:
        logits: float tensor `[..., K]`.

    Returns:
        Float32 tensor `[...]` in nats.

    Examples:
        >>> import numpy as np
        >>> round(float(np.asarray(categorical_entropy(np.zeros((4,), "float32")))), 4)
        1.3863
    """
    logp = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return -ops.sum(ops.exp(logp) * logp, -1)


def binary_logprob(logits, target):
    """Log-likelihood of a (soft) binary `target` under Bernoulli `logits`.

    `target * log(sigmoid(logits)) + (1 - target) * log(sigmoid(-logits))`;
    the continue loss is its negation.

    Args:
        logits: float tensor.
        target: float tensor of the same shape, values in [0, 1].

    Returns:
        Float32 tensor of the same shape.

    Examples:
        >>> import numpy as np
        >>> logprob = binary_logprob(np.float32(0.0), np.float32(1.0))
        >>> round(float(np.asarray(logprob)), 4)  # log(0.5)
        -0.6931
    """
    logits = ops.cast(logits, "float32")
    target = ops.cast(target, "float32")
    return target * ops.log_sigmoid(logits) + (1.0 - target) * ops.log_sigmoid(-logits)


# ----------------------------------------------------------------------------
# Loops.


def scan(fn, init, xs, unroll=1):
    """`carry, ys = scan(fn, init, xs)` over the leading axis of `xs`.

    `fn(carry, x) -> (carry, y)`; `carry`, `x` and `y` may be nested structures
    (dicts, tuples) of tensors, and `y` need not mirror `carry`.

    On JAX this is `keras.ops.scan` (`jax.lax.scan`). On TensorFlow it is a
    `tf.while_loop` with `maximum_iterations` over TensorArrays, whose
    gradient compiles under XLA (`jit_compile=True`), unlike `keras.ops.scan`
    there. The first step is run outside the loop to learn the structure and
    dtypes of `y`.

    Args:
        fn: the step function.
        init: the initial carry.
        xs: the per-step inputs, each `[T, ...]`, T >= 1.
        unroll: loop unrolling factor (honoured on JAX).

    Returns:
        `(final_carry, ys)` with every leaf of `ys` stacked to `[T, ...]`.

    Examples:
        >>> import numpy as np
        >>> def step(total, x):
        ...     total = total + x
        ...     return total, {"running": total}
        >>> total, ys = scan(step, np.float32(0.0), np.float32([1.0, 2.0, 3.0]))
        >>> float(np.asarray(total)), np.asarray(ys["running"]).tolist()
        (6.0, [1.0, 3.0, 6.0])
    """
    if backend() == "jax":
        return ops.scan(fn, init, xs, unroll=unroll)
    if backend() != "tensorflow":
        raise NotImplementedError(
            "keras_dreamer supports the jax and tensorflow backends, "
            f"not {backend()!r}."
        )
    import tensorflow as tf

    first = tf.nest.flatten(xs)[0]
    # A static length where known; else dynamic (XLA still sees it as a
    # compile-time constant, since it compiles for concrete shapes).
    length = first.shape[0] if first.shape[0] is not None else tf.shape(first)[0]
    carry, y0 = fn(init, tf.nest.map_structure(lambda x: x[0], xs))
    arrays = tf.nest.map_structure(
        lambda y: tf.TensorArray(y.dtype, size=length, element_shape=y.shape).write(
            0, y
        ),
        y0,
    )
    if isinstance(length, int) and length == 1:
        return carry, tf.nest.map_structure(lambda a: a.stack(), arrays)

    def body(index, carry, arrays):
        x = tf.nest.map_structure(lambda t: tf.gather(t, index), xs)
        carry, y = fn(carry, x)
        arrays = tf.nest.map_structure(lambda a, v: a.write(index, v), arrays, y)
        return index + 1, carry, arrays

    _, carry, arrays = tf.while_loop(
        lambda index, *_: index < length,
        body,
        (tf.constant(1), carry, arrays),
        maximum_iterations=length - 1,
    )
    return carry, tf.nest.map_structure(lambda a: a.stack(), arrays)


def conv_grad_mode():
    """How `conv2d_same` computes kernel gradients: the `KERAS_DREAMER_CONV_GRAD`
    environment variable, `"auto"` when unset.

    `"xla"` always uses the backend's own convolution gradient, `"matmul"`
    computes the kernel gradient of every convolution as matrix products on
    JAX (`keras_dreamer.jax_conv`), `"auto"` does so only on a JAX CPU and
    only for the layer shapes where it was measured faster.

    Returns:
        One of `CONV_GRAD_MODES`.

    Raises:
        ValueError: the variable holds another value.

    Examples:
        >>> conv_grad_mode() in CONV_GRAD_MODES
        True
    """
    return env_mode(CONV_GRAD_ENV, CONV_GRAD_MODES)


def env_mode(variable, modes):
    """The mode an environment variable chooses: its value, lower-cased, or
    `modes[0]` when it is unset or empty.

    Args:
        variable: the environment variable's name.
        modes: the valid values, the default first.

    Returns:
        One of `modes`.

    Raises:
        ValueError: the variable holds another value (the message names it
            and the valid values).

    Examples:
        >>> env_mode("KERAS_DREAMER_UNSET_EXAMPLE", ("auto", "off"))
        'auto'
    """
    mode = os.environ.get(variable, "").strip().lower() or modes[0]
    if mode not in modes:
        raise ValueError(
            f"{variable}={os.environ[variable]!r} is not one of {', '.join(modes)}."
        )
    return mode


def matmul_kernel_grad(x_shape, kernel_shape):
    """Whether `conv2d_same` computes this convolution's kernel gradient as
    matrix products (JAX only; see `conv_grad_mode`).

    With `"auto"`, on a JAX CPU: when the layer has at least 32x32 pixels
    or at least 1,024 input x output channel pairs. Measured on a 2-core
    Intel Xeon with AVX-512 (`benchmarks/conv_variants.py`): 1.3-3.6x
    faster kernel gradients for such layers there, while XLA's own stays
    as fast or faster for small images with few channels. The choice is
    logged once per process (logger `keras_dreamer`, level INFO).

    Args:
        x_shape: the input shape `(N, H, W, C)`.
        kernel_shape: the kernel shape `(K, K, C, F)`.

    Returns:
        A bool.

    Examples:
        >>> import os
        >>> os.environ["KERAS_DREAMER_CONV_GRAD"] = "xla"
        >>> matmul_kernel_grad((1024, 32, 32, 32), (5, 5, 32, 48))
        False
        >>> del os.environ["KERAS_DREAMER_CONV_GRAD"]
    """
    mode = conv_grad_mode()
    if backend() != "jax" or mode == "xla":
        return False
    if any(d is None for d in x_shape) or kernel_shape[0] != kernel_shape[1]:
        return False
    if mode == "matmul":
        return True
    import jax

    if jax.default_backend() != "cpu":
        return False
    _, height, width, channels = x_shape
    chosen = height * width >= 1024 or channels * kernel_shape[-1] >= 1024
    log_once(
        "auto",
        "JAX on a CPU: convolution kernel gradients of layers with >= 32x32 "
        "pixels or >= 1,024 channel pairs run as matrix products "
        "(keras_dreamer.jax_conv; %s=xla turns this off).",
        CONV_GRAD_ENV,
    )
    return chosen


def conv2d_same(x, kernel):
    """A stride-1, 'same'-padded 2-D convolution, channels last.

    `keras.ops.conv`, except that on JAX its kernel gradient may be computed
    as matrix products where XLA's CPU kernel gradient is slow (see
    `matmul_kernel_grad`); the forward values are the same either way.

    Args:
        x: `[N, H, W, C]` inputs.
        kernel: `[K, K, C, F]` weights.

    Returns:
        `[N, H, W, F]`.

    Examples:
        >>> import numpy as np
        >>> x = np.ones((1, 4, 4, 1), "float32")
        >>> y = conv2d_same(x, np.ones((3, 3, 1, 2), "float32"))
        >>> np.asarray(y)[0, :2, :2, 0].tolist()
        [[4.0, 6.0], [6.0, 9.0]]
    """
    if matmul_kernel_grad(tuple(x.shape), tuple(kernel.shape)):
        from keras_dreamer import jax_conv

        return jax_conv.conv2d_same(
            ops.convert_to_tensor(x), ops.convert_to_tensor(kernel)
        )
    return ops.conv(x, kernel, strides=1, padding="same")


def upsample2(x):
    """Nearest-neighbour 2x upsampling of `[N, H, W, C]`.

    Args:
        x: tensor `[N, H, W, C]` with static H, W and C.

    Returns:
        Tensor `[N, 2H, 2W, C]`, each pixel repeated in a 2x2 block.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
        >>> np.asarray(upsample2(x))[0, :, :, 0].astype(int).tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    """
    _, h, w, c = x.shape
    x = ops.broadcast_to(x[:, :, None, :, None, :], (ops.shape(x)[0], h, 2, w, 2, c))
    return ops.reshape(x, (-1, 2 * h, 2 * w, c))


def upsample_fold(size):
    """How a 'same' convolution of a 2x nearest-upsampled image reads the
    original image.

    Output pixel `2r + a` (parity `a`) of a size-`size` 'same' convolution
    (padding `(size - 1) // 2` before) reads upsampled pixel `2r + a + i - lo`
    at kernel tap `i`, which is original pixel `r + (a + i - lo) // 2`. The
    taps of one parity that read the same original pixel can be summed into
    one weight first.

    Args:
        size: the kernel size along one axis.

    Returns:
        `(fold, before, after)`: `fold[a, d, i] = 1` when tap `i` of parity
        `a` reads original offset `d - before`, a float32 numpy array
        `[2, before + after + 1, size]`; the original image needs `before`
        pixels of zero padding before and `after` after.

    Examples:
        >>> fold, before, after = upsample_fold(5)
        >>> fold[0].astype(int).tolist(), before, after
        ([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], 1, 1)
        >>> fold[1].astype(int).tolist()
        [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
    """
    # Upsampled pixel 2(r + d) + p is original pixel r + d whatever its phase p.
    fold, before, after = space_to_depth_fold(size)
    return fold.sum(axis=2), before, after


def upsample_conv2d_same(x, kernel):
    """`conv2d_same(upsample2(x), kernel)`, computed on the low-resolution `x`.

    A nearest 2x upsampling followed by a KxK 'same' convolution is, exactly,
    a smaller convolution of `x` (3x3 for K = 5) whose 4 x F outputs are the
    four output pixels of each 2x2 block (each with its kernel taps summed
    per original pixel, see `upsample_fold`), rearranged to `[N, 2H, 2W, F]`.
    For K = 5 that is 36 multiply-adds per input pixel and channel pair where
    the upsampled convolution does 100 (2.8x fewer), on a 4x wider output;
    the values agree up to float rounding, and the gradients flow to the same
    `kernel`.

    Args:
        x: `[N, H, W, C]` inputs (the image before upsampling).
        kernel: `[KH, KW, C, F]` weights of the convolution after upsampling.

    Returns:
        `[N, 2H, 2W, F]`.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(8, dtype="float32").reshape(2, 2, 2, 1)
        >>> k = np.linspace(-1, 1, 50, dtype="float32").reshape(5, 5, 1, 2)
        >>> y = upsample_conv2d_same(x, k)
        >>> bool(np.allclose(y, conv2d_same(upsample2(x), k), atol=1e-5))
        True
    """
    kh, kw, channels, filters = kernel.shape
    fold_h, top, bottom = upsample_fold(kh)
    fold_w, left, right = upsample_fold(kw)
    folded = _fold_kernel("adi,bej,ijco->decabo", fold_h, fold_w, kernel)
    folded = ops.reshape(folded, (*folded.shape[:3], 4 * filters))
    y = _padded_conv(x, folded, (top, bottom), (left, right))
    _, h, w, _ = y.shape
    y = ops.reshape(y, (-1, h, w, 2, 2, filters))
    y = ops.transpose(y, (0, 1, 3, 2, 4, 5))
    return ops.reshape(y, (-1, 2 * h, 2 * w, filters))


def max_pool2(x):
    """2x2 max pooling (stride 2) of `[N, H, W, C]` with even H and W.

    Written as a reshape and a max so its gradient is a cheap mask rather than
    XLA's select-and-scatter, which is slow on CPU.

    Args:
        x: tensor `[N, H, W, C]` with static, even H and W.

    Returns:
        Tensor `[N, H / 2, W / 2, C]`.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
        >>> np.asarray(max_pool2(x))[0, :, :, 0].astype(int).tolist()
        [[5, 7], [13, 15]]
    """
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c))
    return ops.max(x, axis=(2, 4))


def space_to_depth_fold(size):
    """How a size-`size` 'same' convolution reads a 2x2 space-to-depth image.

    Output pixel `2r + a` (parity `a`) reads input pixel `2r + a + i - lo` at
    kernel tap `i` (`lo = (size - 1) // 2`), which is pixel `r + d` of the
    space-to-depth image at phase `p`, where `2d + p = a + i - lo`.

    Args:
        size: the kernel size along one axis.

    Returns:
        `(fold, before, after)`: `fold[a, d, p, i] = 1` when tap `i` of
        parity `a` reads offset `d - before` at phase `p`, a float32 numpy
        array `[2, before + after + 1, 2, size]`, and the zero padding the
        space-to-depth image needs before and after.

    Examples:
        >>> fold, before, after = space_to_depth_fold(5)
        >>> fold.shape, before, after
        ((2, 3, 2, 5), 1, 1)
        >>> [int(i) for i in fold[1].reshape(6, 5).argmax(-1)]
        [0, 0, 1, 2, 3, 4]
    """
    lo = (size - 1) // 2
    steps = [[parity + i - lo for i in range(size)] for parity in (0, 1)]
    before = -min(step // 2 for row in steps for step in row)
    after = max(step // 2 for row in steps for step in row)
    fold = np.zeros((2, before + after + 1, 2, size), np.float32)
    for parity, row in enumerate(steps):
        for i, step in enumerate(row):
            fold[parity, step // 2 + before, step % 2, i] = 1.0
    return fold, before, after


def conv2d_same_pooled_blocks(x, kernel):
    """The four outputs of each 2x2 block of `conv2d_same(x, kernel)`, computed
    as one convolution of the space-to-depth image of `x`.

    A stride-1 KxK 'same' convolution is, exactly, a smaller convolution (3x3
    for K = 5) of the image rearranged into 2x2 blocks (`[H/2, W/2, 4C]`)
    whose 4F outputs are the four pixels of each block (`space_to_depth_fold`).
    It does 1.44x the multiply-adds for K = 5, with 4x the input and output
    channels: for an image input of 1 to 4 channels that is much faster than
    the convolution itself. `max_pool2` of the convolution is then a max over
    the block axis, with no spatial rearrangement.

    Args:
        x: `[N, H, W, C]` inputs, H and W even.
        kernel: `[KH, KW, C, F]` weights.

    Returns:
        `[N, H/2, W/2, 4, F]`: block position (row-major over the 2x2 block)
        before channels.

    Examples:
        >>> import numpy as np
        >>> x = np.linspace(-1, 1, 96, dtype="float32").reshape(2, 4, 4, 3)
        >>> k = np.linspace(-1, 1, 150, dtype="float32").reshape(5, 5, 3, 2)
        >>> pooled = np.asarray(conv2d_same_pooled_blocks(x, k)).max(axis=3)
        >>> bool(np.allclose(pooled, max_pool2(conv2d_same(x, k)), atol=1e-5))
        True
    """
    kh, kw, channels, filters = kernel.shape
    _, h, w, _ = x.shape
    fold_h, top, bottom = space_to_depth_fold(kh)
    fold_w, left, right = space_to_depth_fold(kw)
    folded = _fold_kernel("adpi,beqj,ijco->depqcabo", fold_h, fold_w, kernel)
    folded = ops.reshape(folded, (*folded.shape[:2], 4 * channels, 4 * filters))
    x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    x = ops.reshape(x, (-1, h // 2, w // 2, 4 * channels))
    y = _padded_conv(x, folded, (top, bottom), (left, right))
    return ops.reshape(y, (-1, h // 2, w // 2, 4, filters))


def pool_conv_on_blocks(height, width, channels):
    """Whether a 'same' convolution + 2x2 max pooling of a `[N, height, width,
    channels]` input runs as `conv2d_same_pooled_blocks` (`kd.layers.PoolConv2D`).

    Both ways compute the same function; which is faster depends on the
    backend's convolution kernels. Measured on a 2-core Intel Xeon with
    AVX-512 (`benchmarks/pool_conv.py`, RESULTS.md): on a JAX CPU the
    space-to-depth blocks win or tie for inputs of at least 32x32 pixels,
    whatever their width (0.99-1.58x, 1.24x on size12m's second layer), and
    mostly lose below; on a TensorFlow CPU (oneDNN) they win or tie up to 16
    input channels (1.02-1.99x) and lose from 32 (0.53-0.90x). On an
    accelerator only the image layer (<= 4 channels) takes them. The choice
    is logged once per process (logger `keras_dreamer`, level INFO).

    Args:
        height: input height.
        width: input width.
        channels: input channels.

    Returns:
        A bool.

    Examples:
        >>> pool_conv_on_blocks(64, 64, 3), pool_conv_on_blocks(8, 8, 512)
        (True, False)
    """
    on_cpu = _on_cpu()
    if not on_cpu:
        chosen, rule = channels <= 4, "inputs of <= 4 channels"
    elif backend() == "jax":
        chosen = channels <= 4 or height * width >= 1024
        rule = "inputs of <= 4 channels or >= 32x32 pixels"
    else:
        chosen, rule = channels <= 16, "inputs of <= 16 channels"
    log_once(
        "pool",
        "%s on a %s: convolution + 2x2 max pooling of %s runs on the "
        "2x2 space-to-depth blocks (keras_dreamer.ops.pool_conv_on_blocks).",
        backend(),
        "CPU" if on_cpu else "accelerator",
        rule,
    )
    return chosen


def log_once(key, message, *args):
    """Logs a choice made at run time once per process.

    `message % args` goes to the `keras_dreamer` logger at INFO level the
    first time `key` is seen in this process; later calls with that key log
    nothing.

    Args:
        key: what the message is about (one message per key).
        message: a `logging` format string.
        *args: its arguments.

    Examples:
        >>> log_once("example", "said once: %s", "this")
        >>> log_once("example", "never said")
    """
    if key not in _logged:
        _logged.add(key)
        _logger.info(message, *args)


def _on_cpu():
    """Whether this backend computes on the CPU (no GPU or TPU visible)."""
    if backend() == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend() == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    return True


def _fold_kernel(equation, fold_h, fold_w, kernel):
    kernel = ops.convert_to_tensor(kernel)
    return ops.einsum(
        equation,
        ops.cast(fold_h, kernel.dtype),
        ops.cast(fold_w, kernel.dtype),
        kernel,
    )


def _padded_conv(x, kernel, rows, cols):
    """A stride-1 convolution of `x` zero-padded by `rows` / `cols` (before,
    after) pixels: `conv2d_same` when that is its 'same' padding."""
    centred = rows[0] == rows[1] == cols[0] == cols[1]
    if centred and kernel.shape[0] == kernel.shape[1] == 2 * rows[0] + 1:
        return conv2d_same(x, kernel)
    x = ops.pad(x, ((0, 0), rows, cols, (0, 0)))
    return ops.conv(x, kernel, strides=1, padding="valid")


def block_matmul(x, kernel):
    """`einsum("ngi,gio->ngo", x, kernel)`: one matrix product per block.

    On JAX it runs as G separate matrix products stacked on the block axis:
    XLA's CPU backend lays the batched product out block-major with the batch
    last, and every consumer then reads it transposed (the RSSM's block-GRU
    step, 1.6x slower on a 2-core Intel Xeon, RESULTS.md). TensorFlow keeps
    the batched product, which was faster there.

    Args:
        x: `[N, G, I]` inputs, one slice per block.
        kernel: `[G, I, O]` weights.

    Returns:
        `[N, G, O]`.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(12, dtype="float32").reshape(2, 3, 2)
        >>> k = np.ones((3, 2, 4), "float32")
        >>> np.asarray(block_matmul(x, k))[1, :, 0].tolist()
        [13.0, 17.0, 21.0]
    """
    if backend() != "jax":
        return ops.einsum("ngi,gio->ngo", x, kernel)
    blocks = [ops.matmul(x[:, g], kernel[g]) for g in range(kernel.shape[0])]
    return ops.stack(blocks, axis=1)
