"""The critic: DreamerV3's value network and its slow (EMA) copy."""

import keras
from keras import ops

from keras_dreamer import ops as kdops
from keras_dreamer.layers.heads import MLPHead


@keras.saving.register_keras_serializable(package="keras_dreamer")
class Critic(MLPHead):
    """The value `v(s)` as a two-hot distribution, with a slow copy of itself.

    An MLP of `layers` `Dense -> RMSNorm -> SiLU` blocks of width `units` and
    a zero-initialised linear output over `bins` symexp-spaced bins (so every
    value is exactly 0 at initialisation). The slow critic is a second MLP of
    the same shape, held as non-trainable weights: it starts as an exact copy
    and follows the critic by `slow <- rate * critic + (1 - rate) * slow`
    every `every` updates (`update_slow`). DreamerV3 regularises the critic
    towards the slow critic's values.

    Args:
        units: hidden width.
        layers: hidden layers.
        bins: number of two-hot bins (odd; 255 in DreamerV3).
        act: activation name.
        outscale: initial scale of the output layer (0 in DreamerV3).
        slow_rate: the EMA rate of the slow copy.
        slow_every: updates between EMA steps.
        **kwargs: forwarded to `keras.layers.Layer`.

    Returns:
        `call(feat)` returns the value logits `[..., bins]`.

    Examples:
        >>> import numpy as np
        >>> import keras_dreamer as kd
        >>> critic = kd.layers.Critic(units=8, layers=1, bins=5)
        >>> feat = np.ones((2, 6), "float32")
        >>> ops.convert_to_numpy(critic.value(critic(feat))).tolist()
        [0.0, 0.0]
        >>> ops.convert_to_numpy(critic.slow_value(feat)).tolist()
        [0.0, 0.0]
    """

    def __init__(
        self,
        units=1024,
        layers=3,
        bins=255,
        act="silu",
        outscale=0.0,
        slow_rate=0.02,
        slow_every=1,
        **kwargs,
    ):
        super().__init__(bins, units, layers, act, outscale, **kwargs)
        self.bins = bins
        self.slow_rate = slow_rate
        self.slow_every = slow_every
        self.bin_values = kdops.twohot_bins(bins)
        self.slow = MLPHead(
            bins,
            units,
            layers,
            act,
            outscale,
            trainable=False,
            name="slow",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        super().build(input_shape)
        self.slow.build(input_shape)
        self.slow_updates = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="slow_updates",
        )
        # Each sublayer by name: on TensorFlow a layer's `trainable` setter
        # does not reach the sublayers it holds in a list.
        for layer in (self.slow, *self.slow.hidden, self.slow.out):
            layer.trainable = False
        for slow, fast in zip(self.slow_weights(), self.fast_weights()):
            # A copy: JAX's train step donates every state buffer, so two
            # variables must never share one.
            slow.assign(ops.copy(fast.value))

    def fast_weights(self):
        """The critic's own weights, in the order of `slow_weights()`."""
        return [w for layer in (*self.hidden, self.out) for w in layer.weights]

    def slow_weights(self):
        """The slow copy's weights, in the order of `fast_weights()`."""
        return [
            w for layer in (*self.slow.hidden, self.slow.out) for w in layer.weights
        ]

    def value(self, logits):
        """The expected value of value logits, `[...]`."""
        return kdops.twohot_mean(logits, self.bin_values)

    def slow_logits(self, feat):
        """The slow critic's logits on `feat`, without gradient."""
        return ops.stop_gradient(self.slow(feat))

    def slow_value(self, feat):
        """The slow critic's expected value on `feat`, without gradient."""
        return self.value(self.slow_logits(feat))

    def loss(self, logits, target):
        """Two-hot cross-entropy of the logits against raw targets, `[...]`."""
        return kdops.twohot_loss(logits, ops.stop_gradient(target), self.bin_values)

    def update_slow(self):
        """Advances the slow copy; call it at the start of every train step.

        DreamerV3 moves the slow weights after each optimizer update, from
        the updated critic: `slow <- rate * critic + (1 - rate) * slow` when
        the update count is a multiple of `slow_every`. Called at the start
        of train step k, this applies that move for update k - 1 (the critic
        weights are then exactly those after update k - 1), so the slow
        weights every loss sees are the reference's; the first call only
        counts. It assigns variables, so it runs inside a compiled train step
        on every backend.
        """
        count = self.slow_updates
        due = ops.logical_and(
            ops.greater(count, 0), ops.equal(ops.mod(count - 1, self.slow_every), 0)
        )
        mix = ops.where(due, self.slow_rate, 0.0)
        for slow, fast in zip(self.slow_weights(), self.fast_weights()):
            target = ops.cast(ops.stop_gradient(fast), slow.dtype)
            slow.assign(slow + ops.cast(mix, slow.dtype) * (target - slow))
        count.assign(count + 1)

    def get_config(self):
        config = {
            **super().get_config(),
            "bins": self.bins,
            "slow_rate": self.slow_rate,
            "slow_every": self.slow_every,
        }
        del config["outputs"]
        return config
