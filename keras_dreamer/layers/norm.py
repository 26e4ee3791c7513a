"""RMS normalisation."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_dreamer")
class RMSNorm(keras.layers.Layer):
    """Root-mean-square normalisation over the last axis, with a learned scale.

    Computes `x * rsqrt(mean(x**2) + epsilon) * scale` in float32 and returns
    the compute dtype, as DreamerV3's `rms` norm (no shift, epsilon 1e-4).

    Args:
        epsilon: added to the mean square.
        **kwargs: forwarded to `keras.layers.Layer`.

    Examples:
        >>> import numpy as np
        >>> y = RMSNorm()(np.array([[3.0, -3.0]], "float32"))
        >>> np.round(ops.convert_to_numpy(y), 3).tolist()
        [[1.0, -1.0]]
    """

    def __init__(self, epsilon=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],), initializer="ones"
        )

    def call(self, x):
        x32 = ops.cast(x, "float32")
        mean_square = ops.mean(ops.square(x32), axis=-1, keepdims=True)
        y = (
            x32
            * ops.rsqrt(mean_square + self.epsilon)
            * ops.cast(self.scale, "float32")
        )
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
