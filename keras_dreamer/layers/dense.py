"""Linear -> RMSNorm -> activation, the building block of every MLP here."""

import keras

from keras_dreamer.layers.common import fan_in_init
from keras_dreamer.layers.norm import RMSNorm


@keras.saving.register_keras_serializable(package="keras_dreamer")
class DenseNormAct(keras.layers.Layer):
    """`act(RMSNorm(Dense(units)(x)))`, DreamerV3's hidden-layer unit.

    Args:
        units: output width.
        act: activation name (SiLU by default).
        **kwargs: forwarded to `keras.layers.Layer`.

    Examples:
        >>> import numpy as np
        >>> tuple(DenseNormAct(4)(np.ones((2, 3), "float32")).shape)
        (2, 4)
    """

    def __init__(self, units, act="silu", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.act = act
        self.dense = keras.layers.Dense(
            units,
            kernel_initializer=fan_in_init(),
            dtype=self.dtype_policy,
            name="linear",
        )
        self.norm = RMSNorm(dtype=self.dtype_policy, name="norm")
        self.activation = keras.activations.get(act)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.norm.build((*input_shape[:-1], self.units))

    def call(self, x):
        return self.activation(self.norm(self.dense(x)))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "act": self.act}
