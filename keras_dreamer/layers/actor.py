"""The actor: DreamerV3's policy network on the latent features."""

import math

import keras
import numpy as np
from keras import ops

from keras_dreamer import ops as kdops
from keras_dreamer.layers.common import fan_in_init
from keras_dreamer.layers.heads import MLPHead
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete
from keras_dreamer.spaces import as_act_space

_LOG_2PI = math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="keras_dreamer")
class Actor(keras.layers.Layer):
    """The policy `pi(a | s)` on the feature vector `concat(deter, flat stoch)`.

    An MLP of `layers` `Dense -> RMSNorm -> SiLU` blocks of width `units`,
    then a linear output scaled by `outscale` at initialisation:

    - `Discrete(n)`: `n` logits of a categorical distribution. DreamerV3's
      code applies no uniform mix to the policy (its paper describes 1%);
      `unimix=0.01` turns the mix on.
    - `Box(shape, low, high)`: a normal with mean `tanh(m)` and standard
      deviation `(maxstd - minstd) * sigmoid(s + 2) + minstd`, independent
      per dimension (no tanh squashing of samples, no Jacobian term). `m`
      and `s` come from two output layers, `net/out` and `stddev`, as in the
      reference (one layer of twice the width would be the same function,
      but adaptive gradient clipping, which works per weight tensor, would
      clip it differently). Its samples live in `[-1, 1]` around the mean;
      `to_env` clips them and maps them to the space's bounds, which must be
      finite.

    The distribution is passed around as the dict `call` returns, so it can
    cross `scan` boundaries: `{"logits"}` or `{"mean", "std"}`.

    Args:
        act_space: `kd.Discrete`, `kd.Box` or an int (discrete).
        units: hidden width.
        layers: hidden layers.
        act: activation name.
        unimix: uniform mix of the categorical policy (0 as in the code).
        minstd: smallest standard deviation of a `Box` policy.
        maxstd: largest standard deviation of a `Box` policy.
        outscale: initial scale of the output layer (0.01 in DreamerV3).
        **kwargs: forwarded to `keras.layers.Layer`.

    Returns:
        `call(feat)` returns the distribution dict, each entry `[..., A]`.

    Examples:
        >>> import numpy as np
        >>> import keras_dreamer as kd
        >>> actor = kd.layers.Actor(kd.Discrete(3), units=8, layers=1)
        >>> dist = actor(np.zeros((2, 6), "float32"))
        >>> noise = np.random.default_rng(0).uniform(size=(2, 3))
        >>> action = actor.sample(dist, noise)
        >>> np.asarray(action).sum(-1).tolist()
        [1.0, 1.0]
        >>> tuple(actor.log_prob(dist, action).shape), tuple(actor.entropy(dist).shape)
        ((2,), (2,))
    """

    def __init__(
        self,
        act_space,
        units=1024,
        layers=3,
        act="silu",
        unimix=0.0,
        minstd=0.1,
        maxstd=1.0,
        outscale=0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.act_space = as_act_space(act_space)
        if isinstance(self.act_space, Box):
            if not (
                np.all(np.isfinite(self.act_space.low))
                and np.all(np.isfinite(self.act_space.high))
            ):
                raise ValueError(
                    f"Actor needs a Box action space with finite bounds, got "
                    f"{self.act_space} (low {self.act_space.low.tolist()}, high "
                    f"{self.act_space.high.tolist()}). Rescale the env's actions "
                    "to finite bounds, e.g. [-1, 1]."
                )
        self.units = units
        self.layers = layers
        self.act = act
        self.unimix = unimix
        self.minstd = minstd
        self.maxstd = maxstd
        self.outscale = outscale
        self.discrete = isinstance(self.act_space, Discrete)
        width = self.act_space.width
        self.net = MLPHead(
            width, units, layers, act, outscale, name="net", dtype=self.dtype_policy
        )
        self.stddev = None
        if not self.discrete:
            self.stddev = keras.layers.Dense(
                width,
                kernel_initializer=fan_in_init(outscale),
                name="stddev",
                dtype=self.dtype_policy,
            )

    @property
    def width(self):
        """The width A of an action vector."""
        return self.act_space.width

    def build(self, feat_shape):
        self.net.build(feat_shape)
        if self.stddev is not None:
            self.stddev.build((None, self.units if self.layers else feat_shape[-1]))

    def call(self, feat):
        if self.discrete:
            return {"logits": kdops.unimix_logits(self.net(feat), self.unimix)}
        x = self.net.trunk(feat)
        mean = ops.cast(self.net.out(x), "float32")
        std = ops.cast(self.stddev(x), "float32")
        std = (self.maxstd - self.minstd) * ops.sigmoid(std + 2.0) + self.minstd
        return {"mean": ops.tanh(mean), "std": std}

    def noise_shape(self, shape_prefix):
        """The shape of the noise `sample` takes for a batch `shape_prefix`."""
        return (*shape_prefix, self.width)

    def draw_noise(self, shape_prefix, seed=None):
        """Noise for `sample`: uniform for discrete, standard normal for `Box`.

        Args:
            shape_prefix: the batch shape, e.g. `(B,)` or `(H, B)`.
            seed: a `keras.random.SeedGenerator` or int.

        Returns:
            A float32 tensor `[*shape_prefix, A]`.
        """
        shape = self.noise_shape(shape_prefix)
        if self.discrete:
            return keras.random.uniform(shape, seed=seed)
        return keras.random.normal(shape, seed=seed)

    def sample(self, dist, noise):
        """An action sampled with pre-drawn `noise` (see `draw_noise`).

        Discrete: a one-hot float32 vector by the Gumbel-max trick on uniform
        noise; `Box`: `mean + std * noise` with standard normal noise.
        Sampling has no gradient; the actor learns by REINFORCE.
        """
        if self.discrete:
            return ops.stop_gradient(kdops.sample_onehot(dist["logits"], noise))
        noise = ops.cast(noise, "float32")
        sample = ops.add(dist["mean"], ops.multiply(dist["std"], noise))
        return ops.stop_gradient(sample)

    def mode(self, dist):
        """The most likely action: the argmax one-hot or the mean."""
        if self.discrete:
            index = ops.argmax(dist["logits"], axis=-1)
            return ops.one_hot(index, self.width, dtype="float32")
        return dist["mean"]

    def log_prob(self, dist, action):
        """`log pi(action)`, summed over action dimensions, `[...]`."""
        action = ops.cast(action, "float32")
        if self.discrete:
            logp = ops.log_softmax(dist["logits"], axis=-1)
            return ops.sum(action * logp, -1)
        mean, std = dist["mean"], dist["std"]
        z = (action - mean) / std
        return ops.sum(-0.5 * ops.square(z) - ops.log(std) - 0.5 * _LOG_2PI, -1)

    def entropy(self, dist):
        """The entropy of the policy in nats, summed over dimensions, `[...]`."""
        if self.discrete:
            return kdops.categorical_entropy(dist["logits"])
        return ops.sum(ops.log(dist["std"]) + 0.5 * (_LOG_2PI + 1.0), -1)

    def to_env(self, action):
        """An action as the env takes it: one-hot as is; `Box` samples clipped
        to `[-1, 1]` and mapped linearly to `[low, high]`, shaped like the
        space's flat width."""
        if self.discrete:
            return action
        low = ops.convert_to_tensor(self.act_space.low.reshape(-1), "float32")
        high = ops.convert_to_tensor(self.act_space.high.reshape(-1), "float32")
        unit = (ops.clip(ops.cast(action, "float32"), -1.0, 1.0) + 1.0) / 2.0
        return low + unit * (high - low)

    def get_config(self):
        return {
            **super().get_config(),
            "act_space": self.act_space.get_config(),
            "units": self.units,
            "layers": self.layers,
            "act": self.act,
            "unimix": self.unimix,
            "minstd": self.minstd,
            "maxstd": self.maxstd,
            "outscale": self.outscale,
        }
