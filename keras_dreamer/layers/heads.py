"""Reward and continue heads on the latent features."""

import keras
from keras import ops

from keras_dreamer import ops as kdops
from keras_dreamer.layers.common import fan_in_init
from keras_dreamer.layers.dense import DenseNormAct


@keras.saving.register_keras_serializable(package="keras_dreamer")
class MLPHead(keras.layers.Layer):
    """`layers` hidden `DenseNormAct(units)` blocks and a linear output.

    The trunk of every head, the actor and the critic. The output layer uses
    the fan-in initialiser scaled by `outscale` (0 gives a zero output).

    Args:
        outputs: output width.
        units: hidden width.
        layers: hidden layers.
        act: activation name.
        outscale: initial scale of the output layer.
        **kwargs: forwarded to `keras.layers.Layer`.

    Returns:
        `call(feat)` returns float32 `[..., outputs]`.

    Examples:
        >>> import numpy as np
        >>> head = MLPHead(3, units=8, layers=2, outscale=0.0)
        >>> ops.convert_to_numpy(head(np.ones((1, 5), "float32"))).tolist()
        [[0.0, 0.0, 0.0]]
    """

    def __init__(
        self, outputs, units=1024, layers=1, act="silu", outscale=1.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.units = units
        self.layers = layers
        self.act = act
        self.outscale = outscale
        self.hidden = [
            DenseNormAct(units, act, name=f"hidden{i}", dtype=self.dtype_policy)
            for i in range(layers)
        ]
        self.out = keras.layers.Dense(
            outputs,
            kernel_initializer=fan_in_init(outscale),
            name="out",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        width = input_shape[-1]
        for layer in self.hidden:
            layer.build((None, width))
            width = self.units
        self.out.build((None, width))

    def trunk(self, feat):
        """The hidden layers' output, before the output layer."""
        x = feat
        for layer in self.hidden:
            x = layer(x)
        return x

    def call(self, feat):
        return ops.cast(self.out(self.trunk(feat)), "float32")

    def get_config(self):
        return {
            **super().get_config(),
            "outputs": self.out.units,
            "units": self.units,
            "layers": self.layers,
            "act": self.act,
            "outscale": self.outscale,
        }


@keras.saving.register_keras_serializable(package="keras_dreamer")
class RewardHead(MLPHead):
    """Predicts the reward as a two-hot distribution over symexp-spaced bins.

    The output layer is zero-initialised (`outscale=0`), so the predicted
    reward is exactly 0 at initialisation (the bins are summed symmetrically).

    Args:
        units: hidden width.
        layers: hidden layers.
        bins: number of two-hot bins (odd; 255 in DreamerV3).
        act: activation name.
        outscale: initial scale of the output layer.
        **kwargs: forwarded to `keras.layers.Layer`.

    Examples:
        >>> import numpy as np
        >>> head = RewardHead(units=8, bins=5)
        >>> logits = head(np.ones((2, 6), "float32"))
        >>> ops.convert_to_numpy(head.predict_value(logits)).tolist()
        [0.0, 0.0]
    """

    def __init__(
        self, units=1024, layers=1, bins=255, act="silu", outscale=0.0, **kwargs
    ):
        super().__init__(bins, units, layers, act, outscale, **kwargs)
        self.bins = bins
        self.bin_values = kdops.twohot_bins(bins)

    def loss(self, logits, reward):
        """Two-hot cross-entropy against the raw reward, `[...]`."""
        return kdops.twohot_loss(logits, reward, self.bin_values)

    def predict_value(self, logits):
        """The expected reward under the predicted distribution."""
        return kdops.twohot_mean(logits, self.bin_values)

    def get_config(self):
        config = {**super().get_config(), "bins": self.bins}
        del config["outputs"]
        return config


@keras.saving.register_keras_serializable(package="keras_dreamer")
class ContinueHead(MLPHead):
    """Predicts whether the episode continues (a Bernoulli logit).

    The target is `(1 - is_terminal) * (1 - 1 / horizon)`: with the default
    horizon of 333 a non-terminal step has target 0.997 (DreamerV3's
    `contdisc`).

    Args:
        units: hidden width.
        layers: hidden layers.
        act: activation name.
        outscale: initial scale of the output layer.
        horizon: discount horizon folded into the target (None: no discount).
        **kwargs: forwarded to `keras.layers.Layer`.

    Examples:
        >>> import numpy as np
        >>> head = ContinueHead(units=8)
        >>> tuple(head(np.ones((2, 3, 6), "float32")).shape)
        (2, 3)
    """

    def __init__(
        self, units=1024, layers=1, act="silu", outscale=1.0, horizon=333, **kwargs
    ):
        super().__init__(1, units, layers, act, outscale, **kwargs)
        self.horizon = horizon

    def call(self, feat):
        return ops.squeeze(super().call(feat), -1)

    def target(self, is_terminal):
        cont = 1.0 - ops.cast(is_terminal, "float32")
        if self.horizon:
            cont = cont * (1.0 - 1.0 / self.horizon)
        return cont

    def loss(self, logits, is_terminal):
        """Negative log-likelihood of the continue target, `[...]`."""
        return -kdops.binary_logprob(logits, self.target(is_terminal))

    def predict_value(self, logits):
        """The predicted continue probability."""
        return ops.sigmoid(logits)

    def get_config(self):
        config = {**super().get_config(), "horizon": self.horizon}
        del config["outputs"]
        return config
