"""Backend-agnostic math for the world model and the agent.

Everything here is written with `keras.ops` alone, so it runs on every
backend: symlog/symexp, two-hot regression, straight-through categorical
samples from pre-drawn noise, KL and entropy. What differs between the
backends (loops, compiled functions, kernels and their speed rules) is in
`keras_dreamer.backend`; the convolution rewrites are in
`keras_dreamer.layers.conv`; train-step plumbing is in
`keras_dreamer.fitting`.
"""

import importlib

import numpy as np
from keras import ops

_TINY = 1e-20

# Names this module had before `keras_dreamer.backend` and
# `keras_dreamer.layers.conv` took them; `kd.ops.<name>` still finds them.
_MOVED = {
    "backend": ("keras_dreamer.backend", "name"),
    "scan": ("keras_dreamer.backend", "scan"),
    "block_matmul": ("keras_dreamer.backend", "block_matmul"),
    "matmul_kernel_grad": ("keras_dreamer.backend", "matmul_kernel_grad"),
    "CONV_GRAD_ENV": ("keras_dreamer.backend.common", "CONV_GRAD_ENV"),
    "CONV_GRAD_MODES": ("keras_dreamer.backend.common", "CONV_GRAD_MODES"),
    "conv_grad_mode": ("keras_dreamer.backend.common", "conv_grad_mode"),
    "env_mode": ("keras_dreamer.backend.common", "env_mode"),
    "log_once": ("keras_dreamer.backend.common", "log_once"),
    **{
        name: ("keras_dreamer.layers.conv", name)
        for name in (
            "conv2d_same",
            "conv2d_same_pooled_blocks",
            "max_pool2",
            "pool_conv_on_blocks",
            "space_to_depth_fold",
            "upsample2",
            "upsample_conv2d_same",
            "upsample_fold",
        )
    },
}


def __getattr__(name):
    if name in _MOVED:
        module, attribute = _MOVED[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'keras_dreamer.ops' has no attribute {name!r}")


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
    return ops.add(onehot, probs - ops.stop_gradient(probs))


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
