"""Observation encoder: CNN for images, MLP for vectors."""

import keras
from keras import ops

from keras_dreamer import ops as kdops
from keras_dreamer.layers.common import conv2d
from keras_dreamer.layers.conv import max_pool2  # noqa: F401 (its earlier home)
from keras_dreamer.layers.dense import DenseNormAct
from keras_dreamer.layers.norm import RMSNorm
from keras_dreamer.spaces import Discrete
from keras_dreamer.spaces import as_obs_space


def split_obs_space(obs_space):
    """Sorted image keys and vector keys of an observation space dict.

    Images are uint8 boxes of rank 2 or 3; every other entry (float boxes,
    `Discrete`) is a vector key.

    Args:
        obs_space: dict of observation key to space or shape tuple.

    Returns:
        `(spaces, image_keys, vector_keys)`: the dict with every entry as a
        space object, and the two sorted key lists.

    Examples:
        >>> _, images, vectors = split_obs_space({"image": (64, 64, 3), "pos": (2,)})
        >>> images, vectors
        (['image'], ['pos'])
    """
    spaces = {k: as_obs_space(v, k) for k, v in obs_space.items()}
    images = sorted(k for k, s in spaces.items() if getattr(s, "is_image", False))
    vectors = sorted(k for k in spaces if k not in images)
    return spaces, images, vectors


def image_channels(space):
    """Channels of an image space: C for (H, W, C), 1 for (H, W).

    Args:
        space: a uint8 image `Box`.

    Returns:
        An int.

    Examples:
        >>> from keras_dreamer.spaces import Box
        >>> image_channels(Box((64, 64), 0, 255, "uint8"))
        1
    """
    return space.shape[2] if len(space.shape) == 3 else 1


def vector_width(space):
    """Width of a vector key once flattened (one-hot width for `Discrete`).

    Args:
        space: a float `Box` or a `Discrete`.

    Returns:
        An int.

    Examples:
        >>> from keras_dreamer.spaces import Box
        >>> vector_width(Discrete(5)), vector_width(Box((2, 3)))
        (5, 6)
    """
    return space.n if isinstance(space, Discrete) else space.width


def serialize_obs_space(spaces):
    """An observation space as a JSON-friendly dict (for `get_config`).

    Args:
        spaces: dict of observation key to space object.

    Returns:
        Dict of key to `space.get_config()`.

    Examples:
        >>> serialize_obs_space({"pos": Discrete(4)})
        {'pos': {'class_name': 'Discrete', 'n': 4}}
    """
    return {k: s.get_config() for k, s in spaces.items()}


def flatten_leading(x, keep):
    """Reshapes `x` to `[N, *x.shape[-keep:]]`; returns it and the leading shape.

    Args:
        x: a tensor.
        keep: how many trailing axes to keep.

    Returns:
        `(flat, lead)`: the reshaped tensor and the merged leading shape.

    Examples:
        >>> import numpy as np
        >>> flat, lead = flatten_leading(np.zeros((2, 5, 8, 8, 3)), 3)
        >>> tuple(flat.shape), tuple(lead)
        ((10, 8, 8, 3), (2, 5))
    """
    shape = ops.shape(x)
    lead = shape[: len(shape) - keep]
    return ops.reshape(x, (-1, *shape[len(shape) - keep :])), lead


@keras.saving.register_keras_serializable(package="keras_dreamer")
class Encoder(keras.layers.Layer):
    """Maps an observation dict to one token vector per step.

    Image keys (uint8, concatenated on channels in sorted key order) go
    through `x / 255 - 0.5` and `len(mults)` stages of
    `Conv2D(depth * mult, kernel) -> 2x2 max-pool -> RMSNorm -> SiLU`, then are
    flattened; the final spatial size must lie in 3..16 (64x64 -> 4x4).
    Vector keys (sorted; `Discrete` ones one-hot) are symlog-squashed and go
    through `layers` `Linear -> RMSNorm -> SiLU` blocks of `units`. The
    outputs are concatenated.

    Args:
        obs_space: dict of observation key to `kd.Box`, `kd.Discrete` or a
            shape tuple (rank 2-3 tuples are uint8 images).
        depth: base channel count of the CNN.
        mults: channel multipliers of the CNN stages.
        kernel: convolution kernel size.
        units: width of the vector MLP.
        layers: depth of the vector MLP.
        act: activation name.
        symlog: squash vector inputs with symlog.
        **kwargs: forwarded to `keras.layers.Layer`.

    Examples:
        >>> import numpy as np
        >>> enc = Encoder({"image": (16, 16, 3)}, depth=2, mults=(2, 2))
        >>> tuple(enc({"image": np.zeros((2, 5, 16, 16, 3), "uint8")}).shape)
        (2, 5, 64)
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
        symlog=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spaces, self.image_keys, self.vector_keys = split_obs_space(obs_space)
        if not self.spaces:
            raise ValueError("Encoder needs at least one observation key.")
        self.depth = depth
        self.mults = tuple(mults)
        self.kernel = kernel
        self.units = units
        self.layers = layers
        self.act = act
        self.symlog = symlog
        self.activation = keras.activations.get(act)
        kw = {"dtype": self.dtype_policy}
        self.convs, self.conv_norms = [], []
        if self.image_keys:
            for i, mult in enumerate(self.mults):
                self.convs.append(
                    conv2d(depth * mult, kernel, f"conv{i}", pool=True, **kw)
                )
                self.conv_norms.append(RMSNorm(name=f"conv{i}norm", **kw))
        self.mlp = []
        if self.vector_keys:
            self.mlp = [
                DenseNormAct(units, act, name=f"mlp{i}", **kw) for i in range(layers)
            ]

    @property
    def image_shape(self):
        """(H, W, C) of the concatenated image input, or None."""
        if not self.image_keys:
            return None
        first = self.spaces[self.image_keys[0]].shape
        return (
            first[0],
            first[1],
            sum(image_channels(self.spaces[k]) for k in self.image_keys),
        )

    def build(self, input_shape=None):
        width = 0
        if self.image_keys:
            h, w, c = self.image_shape
            for key in self.image_keys:
                if self.spaces[key].shape[:2] != (h, w):
                    raise ValueError(
                        f"All image keys must share one size; {key!r} has "
                        f"{self.spaces[key].shape[:2]}, expected {(h, w)}."
                    )
            for conv, norm in zip(self.convs, self.conv_norms):
                if h % 2 or w % 2:
                    raise ValueError(
                        f"Image size {self.image_shape[:2]} cannot be halved "
                        f"{len(self.mults)} times by the encoder's max-pools."
                    )
                conv.build((None, h, w, c))
                h, w, c = h // 2, w // 2, conv.filters
                norm.build((None, h, w, c))
            if not (3 <= h <= 16 and 3 <= w <= 16) and len(self.mults) > 0:
                raise ValueError(
                    f"The encoder's final spatial size {(h, w)} must lie in 3..16; "
                    f"choose an image size or number of stages (mults={self.mults}) "
                    f"that gives it (64x64 with 4 stages gives 4x4)."
                )
            width += h * w * c
        if self.vector_keys:
            inp = sum(vector_width(self.spaces[k]) for k in self.vector_keys)
            for layer in self.mlp:
                layer.build((None, inp))
                inp = self.units
            width += inp
        self.output_width = width

    def call(self, obs):
        outputs = []
        lead = None
        if self.image_keys:
            images = []
            for key in self.image_keys:
                x = ops.convert_to_tensor(obs[key])
                if len(self.spaces[key].shape) == 2:
                    x = ops.expand_dims(x, -1)
                images.append(x)
            x = images[0] if len(images) == 1 else ops.concatenate(images, -1)
            x, lead = flatten_leading(x, 3)
            x = ops.cast(x, self.compute_dtype) / 255.0 - 0.5
            for conv, norm in zip(self.convs, self.conv_norms):
                x = self.activation(norm(conv(x)))  # conv max-pools 2x2 after
            outputs.append(ops.reshape(x, (ops.shape(x)[0], -1)))
        if self.vector_keys:
            vectors = []
            for key in self.vector_keys:
                space = self.spaces[key]
                x = ops.convert_to_tensor(obs[key])
                if isinstance(space, Discrete):
                    x, features = ops.one_hot(ops.cast(x, "int32"), space.n), 1
                else:
                    x, features = ops.cast(x, "float32"), len(space.shape)
                    if features == 0:
                        x, features = ops.expand_dims(x, -1), 1
                x, vlead = flatten_leading(x, features)
                vectors.append(ops.reshape(x, (ops.shape(x)[0], -1)))
                lead = vlead if lead is None else lead
            x = ops.concatenate(vectors, -1) if len(vectors) > 1 else vectors[0]
            if self.symlog:
                x = kdops.symlog(x)
            x = ops.cast(x, self.compute_dtype)
            for layer in self.mlp:
                x = layer(x)
            outputs.append(x)
        tokens = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, -1)
        return ops.reshape(tokens, (*lead, ops.shape(tokens)[-1]))

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
            "symlog": self.symlog,
        }
