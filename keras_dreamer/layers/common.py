"""Pieces shared by the layers: the fan-in initialiser and the convolutions."""

import keras
from keras import ops

from keras_dreamer.layers.conv import conv2d_same
from keras_dreamer.layers.conv import conv2d_same_pooled_blocks
from keras_dreamer.layers.conv import max_pool2
from keras_dreamer.layers.conv import pool_conv_on_blocks
from keras_dreamer.layers.conv import upsample_conv2d_same


def fan_in_init(scale=1.0, blocks=1):
    """DreamerV3's `trunc_normal` fan-in initialiser.

    Truncated normal in [-2, 2] standard deviations with standard deviation
    `scale * 1.1368 * sqrt(1 / fan_in)`; Keras's truncated `VarianceScaling`
    applies exactly that 1.1368 correction. `scale=0` gives zeros (DreamerV3's
    `outscale=0.0` reward head).

    Args:
        scale: multiplies the standard deviation.
        blocks: number of diagonal blocks of a `[blocks, in, out]` kernel;
            the fan-in is that of one block.

    Returns:
        A `keras.initializers.Initializer`.

    Examples:
        >>> import keras
        >>> layer = keras.layers.Dense(4, kernel_initializer=fan_in_init(0.0))
        >>> layer.build((None, 3))
        >>> float(keras.ops.max(keras.ops.abs(layer.kernel)))
        0.0
    """
    if scale == 0:
        return keras.initializers.Zeros()
    return keras.initializers.VarianceScaling(
        scale=float(scale) ** 2 * blocks, mode="fan_in", distribution="truncated_normal"
    )


def conv2d(filters, kernel, name, dtype=None, outscale=1.0, upsample=False, pool=False):
    """A 'same'-padded, stride-1 `keras.layers.Conv2D` with the fan-in init.

    Args:
        filters: output channels.
        kernel: kernel size.
        name: layer name.
        dtype: dtype policy.
        outscale: initial weight scale (see `fan_in_init`).
        upsample: upsample the input 2x (nearest) before the convolution.
        pool: max-pool the output 2x2 after the convolution.

    Returns:
        A `SameConv2D` (a `keras.layers.Conv2D`), an `UpsampleConv2D` with
        `upsample=True`, a `PoolConv2D` with `pool=True`.

    Examples:
        >>> conv2d(8, 5, "conv0").padding
        'same'
    """
    cls = UpsampleConv2D if upsample else PoolConv2D if pool else SameConv2D
    return cls(
        filters,
        kernel,
        padding="same",
        kernel_initializer=fan_in_init(outscale),
        name=name,
        dtype=dtype,
    )


@keras.saving.register_keras_serializable(package="keras_dreamer")
class SameConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose 'same', stride-1 convolution runs through
    `keras_dreamer.layers.conv.conv2d_same` (a faster kernel gradient on JAX CPUs).

    Takes `keras.layers.Conv2D`'s arguments; with any other padding, stride,
    dilation, groups or layout it is exactly `keras.layers.Conv2D`. Weights,
    config and outputs are `Conv2D`'s.

    Args:
        filters: output channels.
        kernel_size: kernel size (an int or a pair).
        **kwargs: the other `keras.layers.Conv2D` arguments.

    Returns:
        Called on `[N, H, W, C]`, the `[N, H, W, filters]` outputs.

    Examples:
        >>> import numpy as np
        >>> layer = SameConv2D(4, 5, padding="same")
        >>> tuple(layer(np.zeros((2, 8, 8, 3), "float32")).shape)
        (2, 8, 8, 4)
    """

    def __init__(self, filters, kernel_size, **kwargs):
        # Spelled out so that the API docs can read the arguments.
        super().__init__(filters, kernel_size, **kwargs)

    def _require_plain(self):
        if not self._plain():
            raise ValueError(
                f"{type(self).__name__} {self.name!r} supports padding='same', "
                f"strides 1, dilation 1, groups 1 and channels_last only; got "
                f"padding={self.padding!r}, strides={self.strides}, dilation_rate="
                f"{self.dilation_rate}, groups={self.groups}, data_format="
                f"{self.data_format!r}."
            )

    def _plain(self):
        return (
            self.padding == "same"
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
        )

    def call(self, inputs):
        if not self._plain():
            return super().call(inputs)
        return self._bias_activation(conv2d_same(inputs, self.kernel))

    def _bias_activation(self, outputs):
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)


@keras.saving.register_keras_serializable(package="keras_dreamer")
class UpsampleConv2D(SameConv2D):
    """Nearest-neighbour 2x upsampling, then a 'same', stride-1 `Conv2D`.

    The same function, weights and config as `keras.layers.UpSampling2D(2)`
    followed by `keras.layers.Conv2D(..., padding="same")`, computed without
    the upsampled image: `keras_dreamer.layers.conv.upsample_conv2d_same` folds the
    kernel into a smaller convolution of the low-resolution input (2.8x fewer
    multiply-adds for a 5x5 kernel). A decoder stage is one such layer.

    Args:
        filters: output channels.
        kernel_size: kernel size (an int or a pair).
        **kwargs: the other `keras.layers.Conv2D` arguments; `padding` must
            be "same" and `strides`, `dilation_rate` and `groups` 1, channels
            last.

    Returns:
        Called on `[N, H, W, C]`, the `[N, 2H, 2W, filters]` outputs.

    Raises:
        ValueError: another padding, stride, dilation, grouping or layout.

    Examples:
        >>> import numpy as np
        >>> layer = UpsampleConv2D(4, 5, padding="same")
        >>> tuple(layer(np.zeros((2, 8, 8, 3), "float32")).shape)
        (2, 16, 16, 4)
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._require_plain()

    def call(self, inputs):
        return self._bias_activation(upsample_conv2d_same(inputs, self.kernel))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        double = [None if d is None else 2 * d for d in (h, w)]
        return (n, *double, self.filters)


@keras.saving.register_keras_serializable(package="keras_dreamer")
class PoolConv2D(SameConv2D):
    """A 'same', stride-1 `Conv2D`, then 2x2 max pooling (stride 2).

    The same function, weights and config as `keras.layers.Conv2D(...,
    padding="same")` followed by `keras.layers.MaxPooling2D(2)`. Where
    `keras_dreamer.layers.conv.pool_conv_on_blocks` says it is faster on this
    backend (always for an image of <= 4 channels; on a CPU, more layers
    measured faster), the convolution runs on the 2x2 space-to-depth image
    (`keras_dreamer.layers.conv.conv2d_same_pooled_blocks`) and the pooling is a max
    over the four outputs of each block. An encoder stage is one such
    layer.

    Args:
        filters: output channels.
        kernel_size: kernel size (an int or a pair).
        **kwargs: the other `keras.layers.Conv2D` arguments; `padding` must
            be "same" and `strides`, `dilation_rate` and `groups` 1, channels
            last.

    Returns:
        Called on `[N, H, W, C]` with even H and W, the `[N, H/2, W/2,
        filters]` outputs.

    Raises:
        ValueError: another padding, stride, dilation, grouping or layout.

    Examples:
        >>> import numpy as np
        >>> layer = PoolConv2D(4, 5, padding="same")
        >>> tuple(layer(np.zeros((2, 8, 8, 3), "float32")).shape)
        (2, 4, 4, 4)
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._require_plain()

    def call(self, inputs):
        if not pool_conv_on_blocks(*inputs.shape[1:]):
            return max_pool2(super().call(inputs))
        blocks = conv2d_same_pooled_blocks(inputs, self.kernel)
        return ops.max(self._bias_activation(blocks), axis=3)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        half = [None if d is None else d // 2 for d in (h, w)]
        return (n, *half, self.filters)
