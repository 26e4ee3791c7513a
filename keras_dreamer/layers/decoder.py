"""Observation decoder: images from the latent state, vectors by MLP."""

import keras
from keras import ops

from keras_dreamer.layers.block_linear import BlockLinear
from keras_dreamer.layers.common import conv2d
from keras_dreamer.layers.common import fan_in_init
from keras_dreamer.layers.conv import upsample2  # noqa: F401 (its earlier home)
from keras_dreamer.layers.dense import DenseNormAct
from keras_dreamer.layers.encoder import flatten_leading
from keras_dreamer.layers.encoder import image_channels
from keras_dreamer.layers.encoder import serialize_obs_space
from keras_dreamer.layers.encoder import split_obs_space
from keras_dreamer.layers.encoder import vector_width
from keras_dreamer.layers.norm import RMSNorm
from keras_dreamer.spaces import Discrete


@keras.saving.register_keras_serializable(package="keras_dreamer")
class Decoder(keras.layers.Layer):
    """Predicts observations from the latent state `(deter, stoch)`.

    Images: a block-linear projection of `deter` (`bspace` blocks, laid out as
    `(blocks, h, w, c) -> (h, w, blocks * c)`) plus an MLP of the flattened
    `stoch` (`Linear(2 * units) -> RMSNorm -> SiLU -> Linear`) give a
    low-resolution feature map, normalised and activated; then
    `len(mults) - 1` stages of nearest 2x upsampling, `Conv2D`, RMSNorm and
    SiLU, a last upsampling and `Conv2D` to the image channels, and a sigmoid.
    Each upsampling and its convolution are one `UpsampleConv2D`, which
    computes them on the low-resolution input.
    The output is in [0, 1], split back into the image keys.

    Vectors: `layers` `Linear -> RMSNorm -> SiLU` blocks on
    `concat(deter, stoch)` and one linear output per key (in symlog space for
    float vectors, logits for `Discrete` ones).

    Args:
        obs_space: dict of observation key to space (as for `Encoder`).
        depth: base channel count of the CNN (the stages use
            `depth * mult` channels, in reverse order of `mults`).
        mults: channel multipliers of the CNN stages, as for `Encoder`.
        kernel: convolution kernel size.
        units: width of the stoch MLP and of the vector MLP.
        layers: depth of the vector MLP.
        act: activation name.
        bspace: blocks of the spatial projection from `deter`.
        outscale: initial scale of the output layers.
        **kwargs: forwarded to `keras.layers.Layer`.

    Examples:
        >>> import numpy as np
        >>> dec = Decoder({"image": (16, 16, 3)}, depth=2, mults=(2, 2), units=8,
        ...               bspace=2)
        >>> out = dec(np.zeros((2, 8), "float32"), np.zeros((2, 4, 4), "float32"))
        >>> tuple(out["image"].shape)
        (2, 16, 16, 3)
    """

    def __init__(
        self,
        obs_space,
        depth=64,
        mults=(2, 3, 4, 4),
        kernel=5,
        units=1024,
        layers=3,
        act="silu",
        bspace=8,
        outscale=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spaces, self.image_keys, self.vector_keys = split_obs_space(obs_space)
        self.depth = depth
        self.mults = tuple(mults)
        self.kernel = kernel
        self.units = units
        self.layers = layers
        self.act = act
        self.bspace = bspace
        self.outscale = outscale
        self.activation = keras.activations.get(act)
        kw = {"dtype": self.dtype_policy}
        if self.image_keys:
            depths = [depth * m for m in self.mults][::-1]
            first = self.spaces[self.image_keys[0]].shape
            stages = len(self.mults)
            self.minres = (first[0] // 2**stages, first[1] // 2**stages)
            self.base_channels = depths[0]
            if depths[0] % bspace:
                raise ValueError(
                    f"Decoder needs its lowest-resolution channels (depth * mults[-1] "
                    f"= {depths[0]}) divisible by bspace={bspace}."
                )
            units_out = self.minres[0] * self.minres[1] * depths[0]
            self.space_proj = BlockLinear(units_out, bspace, name="sp0", **kw)
            self.stoch_hidden = DenseNormAct(2 * units, act, name="sp1", **kw)
            self.stoch_proj = keras.layers.Dense(
                units_out, kernel_initializer=fan_in_init(), name="sp2", **kw
            )
            self.space_norm = RMSNorm(name="spnorm", **kw)
            self.convs, self.conv_norms = [], []
            for i, channels in enumerate(depths[1:]):
                self.convs.append(
                    conv2d(channels, kernel, f"conv{i}", upsample=True, **kw)
                )
                self.conv_norms.append(RMSNorm(name=f"conv{i}norm", **kw))
            channels = sum(image_channels(self.spaces[k]) for k in self.image_keys)
            self.image_out = conv2d(
                channels, kernel, "imgout", outscale=outscale, upsample=True, **kw
            )
        self.mlp, self.vector_out = [], {}
        if self.vector_keys:
            self.mlp = [
                DenseNormAct(units, act, name=f"mlp{i}", **kw) for i in range(layers)
            ]
            for key in self.vector_keys:
                self.vector_out[key] = keras.layers.Dense(
                    vector_width(self.spaces[key]),
                    kernel_initializer=fan_in_init(outscale),
                    name=f"out_{key}",
                    **kw,
                )

    def build(self, deter_shape, stoch_shape):
        deter = deter_shape[-1]
        flat_stoch = stoch_shape[-1] * stoch_shape[-2]
        if self.image_keys:
            h, w = self.minres
            self.space_proj.build((None, deter))
            self.stoch_hidden.build((None, flat_stoch))
            self.stoch_proj.build((None, 2 * self.units))
            self.space_norm.build((None, h, w, self.base_channels))
            channels = self.base_channels
            for conv, norm in zip(self.convs, self.conv_norms):
                conv.build((None, h, w, channels))  # upsamples 2x
                h, w, channels = 2 * h, 2 * w, conv.filters
                norm.build((None, h, w, channels))
            self.image_out.build((None, h, w, channels))
        if self.vector_keys:
            width = deter + flat_stoch
            for layer in self.mlp:
                layer.build((None, width))
                width = self.units
            for layer in self.vector_out.values():
                layer.build((None, width))

    def call(self, deter, stoch):
        deter, lead = flatten_leading(ops.convert_to_tensor(deter), 1)
        stoch, _ = flatten_leading(ops.convert_to_tensor(stoch), 2)
        stoch = ops.reshape(stoch, (ops.shape(stoch)[0], -1))
        deter = ops.cast(deter, self.compute_dtype)
        stoch = ops.cast(stoch, self.compute_dtype)
        outputs = {}
        if self.image_keys:
            outputs.update(self._decode_images(deter, stoch, lead))
        if self.vector_keys:
            x = ops.concatenate([deter, stoch], -1)
            for layer in self.mlp:
                x = layer(x)
            for key, layer in self.vector_out.items():
                y = ops.cast(layer(x), "float32")
                space = self.spaces[key]
                shape = (space.n,) if isinstance(space, Discrete) else space.shape
                outputs[key] = ops.reshape(y, (*lead, *shape))
        return outputs

    def _decode_images(self, deter, stoch, lead):
        h, w = self.minres
        groups, channels = self.bspace, self.base_channels
        x0 = ops.reshape(self.space_proj(deter), (-1, groups, h, w, channels // groups))
        x0 = ops.reshape(ops.transpose(x0, (0, 2, 3, 1, 4)), (-1, h, w, channels))
        x1 = ops.reshape(
            self.stoch_proj(self.stoch_hidden(stoch)), (-1, h, w, channels)
        )
        x = self.activation(self.space_norm(x0 + x1))
        for conv, norm in zip(self.convs, self.conv_norms):
            x = self.activation(norm(conv(x)))  # conv upsamples 2x first
        x = ops.sigmoid(ops.cast(self.image_out(x), "float32"))
        outputs, start = {}, 0
        for key in self.image_keys:
            space = self.spaces[key]
            channels = image_channels(space)
            y = x[..., start : start + channels]
            start += channels
            outputs[key] = ops.reshape(y, (*lead, *space.shape))
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "obs_space": serialize_obs_space(self.spaces),
            "depth": self.depth,
            "mults": list(self.mults),
            "kernel": self.kernel,
            "units": self.units,
            "layers": self.layers,
            "act": self.act,
            "bspace": self.bspace,
            "outscale": self.outscale,
        }
