"""Block-diagonal linear layer."""

import keras
from keras import ops

from keras_dreamer import backend
from keras_dreamer.layers.common import fan_in_init


@keras.saving.register_keras_serializable(package="keras_dreamer")
class BlockLinear(keras.layers.Layer):
    """A linear layer whose weight matrix is block-diagonal.

    The input's last axis is split into `blocks` equal groups; group `g` is
    mapped by its own `[in/blocks, units/blocks]` kernel to the `g`-th group of
    the output. Groups share no weights. This is DreamerV3's `BlockLinear`,
    used by the RSSM's block GRU and the decoder's spatial projection.

    Args:
        units: output width, divisible by `blocks`.
        blocks: number of groups.
        use_bias: whether to add a bias of shape `(units,)`.
        outscale: initial weight scale (0 for a zero-initialised output).
        **kwargs: forwarded to `keras.layers.Layer`.

    Examples:
        >>> import numpy as np
        >>> layer = BlockLinear(8, blocks=4)
        >>> tuple(layer(np.ones((2, 12), "float32")).shape)
        (2, 8)
        >>> tuple(layer.kernel.shape)
        (4, 3, 2)
    """

    def __init__(self, units, blocks, use_bias=True, outscale=1.0, **kwargs):
        super().__init__(**kwargs)
        if units % blocks:
            raise ValueError(
                f"BlockLinear units={units} not divisible by blocks={blocks}."
            )
        self.units = units
        self.blocks = blocks
        self.use_bias = use_bias
        self.outscale = outscale

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.blocks:
            raise ValueError(
                f"BlockLinear input width {width} is not divisible by "
                f"blocks={self.blocks}."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.blocks, width // self.blocks, self.units // self.blocks),
            initializer=fan_in_init(self.outscale, self.blocks),
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer="zeros"
            )

    def call(self, x):
        lead = ops.shape(x)[:-1]
        groups = ops.reshape(x, (-1, self.blocks, x.shape[-1] // self.blocks))
        y = backend.block_matmul(groups, ops.cast(self.kernel, self.compute_dtype))
        y = ops.reshape(y, (*lead, self.units))
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y

    def call_grouped(self, grouped, shared):
        """The layer applied to `concat([grouped[:, g], shared])` in each group.

        Equivalent to `call` on the flattened concatenation (what the RSSM
        core feeds its first block layer), without materialising `shared`
        once per group: the shared part is one dense matmul.

        Args:
            grouped: `[N, blocks, a]`, a different input per group.
            shared: `[N, s]`, the same input for every group, with
                `a + s == input_width / blocks`.

        Returns:
            `[N, units]`.
        """
        width = grouped.shape[-1]
        kernel = ops.cast(self.kernel, self.compute_dtype)
        y = backend.block_matmul(grouped, kernel[:, :width])
        shared_kernel = ops.transpose(kernel[:, width:], (1, 0, 2))
        shared_kernel = ops.reshape(shared_kernel, (shared_kernel.shape[0], self.units))
        y = ops.reshape(y, (-1, self.units)) + ops.matmul(shared, shared_kernel)
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "blocks": self.blocks,
            "use_bias": self.use_bias,
            "outscale": self.outscale,
        }
