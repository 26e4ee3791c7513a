"""DreamerV3's recurrent state-space model (RSSM) with a block GRU core."""

import keras
from keras import ops

from keras_dreamer import backend
from keras_dreamer import ops as kdops
from keras_dreamer.layers.block_linear import BlockLinear
from keras_dreamer.layers.common import fan_in_init
from keras_dreamer.layers.dense import DenseNormAct
from keras_dreamer.layers.norm import RMSNorm
from keras_dreamer.spaces import Discrete
from keras_dreamer.spaces import as_act_space
from keras_dreamer.spaces import space_from_config


@keras.saving.register_keras_serializable(package="keras_dreamer")
class RSSM(keras.layers.Layer):
    """Recurrent state-space model with discrete latents (DreamerV3).

    The state is a dict `{"deter": [B, deter], "stoch": [B, stoch, classes]}`
    that starts at zeros. One step of the core maps the previous state and the
    previous action to a new deterministic state `h_t` with an 8-block GRU:
    three `Linear -> RMSNorm -> SiLU` branches embed `h_{t-1}`, the flattened
    `z_{t-1}` and the action; their concatenation is given to every block
    together with that block's chunk of `h_{t-1}`; `dynlayers` block-linear
    layers and a block-linear gate layer follow, with gates split per block as
    `[reset | candidate | update]`, `update = sigmoid(u - 1)`.

    The prior `p(z_t | h_t)` has `imglayers` hidden layers; the posterior
    `q(z_t | h_t, e_t)` sees `concat(h_t, tokens)` through `obslayers` hidden
    layers. Both output `stoch` categoricals of `classes` classes with 1%
    uniform mixing; samples are straight-through one-hots drawn from noise
    prepared before the time loop.

    Args:
        act_space: the action space (`kd.Discrete(n)`, `kd.Box(shape)`, or an
            int for `Discrete`). Discrete actions may be given one-hot or as
            integer indices; continuous actions are scaled by
            `1 / max(1, |a|)` under stop-gradient.
        deter: width of the deterministic state.
        hidden: width of the hidden layers.
        stoch: number of categorical latents.
        classes: classes per latent.
        blocks: number of GRU blocks.
        dynlayers: block-linear hidden layers in the core.
        imglayers: hidden layers of the prior.
        obslayers: hidden layers of the posterior.
        unimix: uniform mixture weight of the latent distributions.
        absolute: if True the posterior sees only the tokens.
        act: activation name.
        unroll: unrolling factor of the time loop (JAX).
        seed: seed of the layer's noise generator.
        **kwargs: forwarded to `keras.layers.Layer`.

    Examples:
        >>> import numpy as np
        >>> rssm = RSSM(act_space=3, deter=16, hidden=8, stoch=4, classes=4, blocks=2)
        >>> rssm.build(tokens_shape=(None, None, 10))
        >>> carry = rssm.initial(2)
        >>> tokens = np.zeros((2, 5, 10), "float32")
        >>> action = np.zeros((2, 5, 3), "float32")
        >>> is_first = np.zeros((2, 5), bool)
        >>> carry, feat = rssm.observe(carry, tokens, action, is_first)
        >>> tuple(feat["stoch"].shape)
        (2, 5, 4, 4)
    """

    def __init__(
        self,
        act_space,
        deter=4096,
        hidden=2048,
        stoch=32,
        classes=32,
        blocks=8,
        dynlayers=1,
        imglayers=2,
        obslayers=1,
        unimix=0.01,
        absolute=False,
        act="silu",
        unroll=1,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if deter % blocks:
            raise ValueError(
                f"RSSM deter={deter} must be divisible by blocks={blocks}."
            )
        self.act_space = as_act_space(act_space)
        self.deter = deter
        self.hidden = hidden
        self.stoch = stoch
        self.classes = classes
        self.blocks = blocks
        self.dynlayers = dynlayers
        self.imglayers = imglayers
        self.obslayers = obslayers
        self.unimix = unimix
        self.absolute = absolute
        self.act = act
        self.unroll = unroll
        self.seed = seed
        self.activation = keras.activations.get(act)

        kw = {"dtype": self.dtype_policy}
        self.dynin = [
            DenseNormAct(hidden, act, name=f"dynin{i}", **kw) for i in range(3)
        ]
        self.dynhid = [
            BlockLinear(deter, blocks, name=f"dynhid{i}", **kw)
            for i in range(dynlayers)
        ]
        self.dynhidnorm = [
            RMSNorm(name=f"dynhid{i}norm", **kw) for i in range(dynlayers)
        ]
        self.dyngru = BlockLinear(3 * deter, blocks, name="dyngru", **kw)
        self.prior_layers = [
            DenseNormAct(hidden, act, name=f"prior{i}", **kw) for i in range(imglayers)
        ]
        self.prior_logit = keras.layers.Dense(
            stoch * classes, kernel_initializer=fan_in_init(), name="priorlogit", **kw
        )
        # The first posterior layer is applied to concat(deter, tokens). Its
        # kernel is split so the token half runs once over the whole sequence,
        # outside the time loop; the result is the same.
        self.obs_in = keras.layers.Dense(
            hidden, kernel_initializer=fan_in_init(), name="obs0", **kw
        )
        self.obs_in_norm = RMSNorm(name="obs0norm", **kw)
        self.obs_layers = [
            DenseNormAct(hidden, act, name=f"obs{i}", **kw) for i in range(1, obslayers)
        ]
        self.obs_logit = keras.layers.Dense(
            stoch * classes, kernel_initializer=fan_in_init(), name="obslogit", **kw
        )
        self.seed_generator = keras.random.SeedGenerator(seed)

    # ------------------------------------------------------------------ build

    @property
    def action_width(self):
        return self.act_space.width

    def build(self, tokens_shape):
        token_width = tokens_shape[-1]
        flat = self.stoch * self.classes
        for layer, width in zip(self.dynin, (self.deter, flat, self.action_width)):
            layer.build((None, width))
        width = self.blocks * (self.deter // self.blocks + 3 * self.hidden)
        for layer, norm in zip(self.dynhid, self.dynhidnorm):
            layer.build((None, width))
            norm.build((None, self.deter))
            width = self.deter
        self.dyngru.build((None, width))
        width = self.deter
        for layer in self.prior_layers:
            layer.build((None, width))
            width = self.hidden
        self.prior_logit.build((None, width))
        self.obs_in.build(
            (None, token_width if self.absolute else self.deter + token_width)
        )
        self.obs_in_norm.build((None, self.hidden))
        for layer in self.obs_layers:
            layer.build((None, self.hidden))
        self.obs_logit.build((None, self.hidden))
        self.token_width = token_width

    # ------------------------------------------------------------------ state

    def initial(self, batch_size):
        """The zero state for `batch_size` sequences, in the compute dtype."""
        dtype = self.compute_dtype
        return {
            "deter": ops.zeros((batch_size, self.deter), dtype),
            "stoch": ops.zeros((batch_size, self.stoch, self.classes), dtype),
        }

    def prepare_action(self, action):
        """Actions as float vectors of the action width (one-hot if discrete)."""
        action = ops.convert_to_tensor(action)
        if isinstance(self.act_space, Discrete) and "int" in str(action.dtype):
            action = ops.one_hot(action, self.act_space.n)
        return ops.cast(action, self.compute_dtype)

    def draw_noise(self, shape_prefix):
        """Uniform noise for sampling latents, `[*shape_prefix, stoch, classes]`."""
        return keras.random.uniform(
            (*shape_prefix, self.stoch, self.classes), seed=self.seed_generator
        )

    # ------------------------------------------------------------------ steps

    def core(self, deter, stoch, action):
        """The block-GRU step: `h_t` from `h_{t-1}`, `z_{t-1}`, `a_{t-1}`."""
        groups, chunk = self.blocks, self.deter // self.blocks
        deter = ops.convert_to_tensor(deter)  # numpy operands fail on torch
        action = ops.convert_to_tensor(action)
        stoch = ops.reshape(stoch, (-1, self.stoch * self.classes))
        action = action / ops.stop_gradient(ops.maximum(1.0, ops.abs(action)))
        x = ops.concatenate(
            [self.dynin[0](deter), self.dynin[1](stoch), self.dynin[2](action)], -1
        )
        # Every block sees its own chunk of deter followed by the shared x.
        grouped = ops.reshape(deter, (-1, groups, chunk))
        x = self.activation(self.dynhidnorm[0](self.dynhid[0].call_grouped(grouped, x)))
        for layer, norm in zip(self.dynhid[1:], self.dynhidnorm[1:]):
            x = self.activation(norm(layer(x)))
        x = ops.reshape(self.dyngru(x), (-1, groups, 3, chunk))
        reset, cand, update = (
            ops.reshape(x[:, :, i], (-1, self.deter)) for i in range(3)
        )
        reset = ops.sigmoid(reset)
        cand = ops.tanh(reset * cand)
        update = ops.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * deter

    def prior_logits(self, deter):
        """Unimixed log-probabilities of the prior, `[..., stoch, classes]`."""
        x = deter
        for layer in self.prior_layers:
            x = layer(x)
        return self._dist_logits(self.prior_logit(x))

    def token_projection(self, tokens):
        """The token half of the posterior's first layer (bias included)."""
        kernel = ops.cast(self.obs_in.kernel, self.compute_dtype)
        tokens = ops.cast(tokens, self.compute_dtype)
        kernel = kernel if self.absolute else kernel[self.deter :]
        return ops.matmul(tokens, kernel) + ops.cast(
            self.obs_in.bias, self.compute_dtype
        )

    def posterior_logits(self, deter, projected_tokens):
        """Posterior log-probabilities from `h_t` and `token_projection(e_t)`."""
        x = projected_tokens
        if not self.absolute:
            kernel = ops.cast(self.obs_in.kernel[: self.deter], self.compute_dtype)
            x = x + ops.matmul(deter, kernel)
        x = self.activation(self.obs_in_norm(x))
        for layer in self.obs_layers:
            x = layer(x)
        return self._dist_logits(self.obs_logit(x))

    def _dist_logits(self, x):
        x = ops.reshape(x, (*ops.shape(x)[:-1], self.stoch, self.classes))
        return kdops.unimix_logits(x, self.unimix)

    def _sample(self, logits, noise):
        return ops.cast(kdops.sample_onehot(logits, noise), self.compute_dtype)

    def _reset(self, carry, action, is_first):
        keep = 1.0 - ops.cast(is_first, self.compute_dtype)
        keep = ops.reshape(keep, (-1, 1))
        deter = carry["deter"] * keep
        stoch = carry["stoch"] * ops.expand_dims(keep, -1)
        return deter, stoch, action * keep

    def _obs_step(self, carry, action, projected_tokens, is_first, noise):
        deter, stoch, action = self._reset(carry, action, is_first)
        deter = self.core(deter, stoch, action)
        logit = self.posterior_logits(deter, projected_tokens)
        stoch = self._sample(logit, noise)
        return {"deter": deter, "stoch": stoch}, {
            "deter": deter,
            "stoch": stoch,
            "logit": logit,
        }

    def _img_step(self, carry, action, noise):
        deter = self.core(carry["deter"], carry["stoch"], action)
        logit = self.prior_logits(deter)
        stoch = self._sample(logit, noise)
        return {"deter": deter, "stoch": stoch}, {
            "deter": deter,
            "stoch": stoch,
            "logit": logit,
        }

    def obs_step(self, carry, prev_action, tokens, is_first, noise=None):
        """One posterior step.

        Args:
            carry: the state `{"deter", "stoch"}` after step t-1.
            prev_action: the action taken before step t, `[B, A]`.
            tokens: the encoder output at step t, `[B, E]`.
            is_first: `[B]` bool; where True, the state and action are zeroed
                before the step (a new episode starts).
            noise: optional uniform noise `[B, stoch, classes]`.

        Returns:
            `(carry, feat)`, feat holding `deter`, `stoch` and the posterior
            `logit` (unimixed log-probabilities).
        """
        noise = self.draw_noise((ops.shape(tokens)[0],)) if noise is None else noise
        action = self.prepare_action(prev_action)
        return self._obs_step(
            self._cast_carry(carry),
            action,
            self.token_projection(tokens),
            is_first,
            noise,
        )

    def img_step(self, carry, prev_action, noise=None):
        """One prior (imagination) step; returns `(carry, feat)`."""
        batch = ops.shape(carry["deter"])[0]
        noise = self.draw_noise((batch,)) if noise is None else noise
        return self._img_step(
            self._cast_carry(carry), self.prepare_action(prev_action), noise
        )

    # -------------------------------------------------------------- sequences

    def observe(self, carry, tokens, prev_action, is_first, noise=None):
        """Posterior states over a sequence (a scan of `obs_step` over time).

        Args:
            carry: the state before the first step.
            tokens: `[B, T, E]` encoder outputs.
            prev_action: `[B, T, A]` (or `[B, T]` indices), the action taken
                before each step (zeroed where `is_first`).
            is_first: `[B, T]` bool.
            noise: optional uniform noise `[B, T, stoch, classes]` for the
                latent samples (drawn from the layer's seed if None).

        Returns:
            `(carry, feat)` with feat entries `[B, T, ...]`.
        """
        tokens = ops.convert_to_tensor(tokens)
        batch, length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        xs = {
            "action": self.prepare_action(prev_action),
            "tokens": self.token_projection(tokens),
            "is_first": ops.convert_to_tensor(is_first),
            "noise": self.draw_noise((batch, length)) if noise is None else noise,
        }
        xs = {k: _time_major(v) for k, v in xs.items()}

        def step(carry, x):
            return self._obs_step(
                carry, x["action"], x["tokens"], x["is_first"], x["noise"]
            )

        carry = self._cast_carry(carry)
        carry, feat = backend.scan(step, carry, xs, unroll=self.unroll)
        return carry, {k: _time_major(v) for k, v in feat.items()}

    def imagine(self, carry, policy, length=None, noise=None):
        """Prior rollout from `carry`, driven by actions or a policy.

        Args:
            carry: the starting state.
            policy: either an action tensor `[B, L, A]` (the action fed before
                each imagined step, e.g. logged actions for an open-loop
                prediction) or a callable `policy(carry) -> action [B, A]`,
                given the state under stop-gradient. Inside the time loop a
                callable must not draw random numbers from a `SeedGenerator`
                on JAX; pass precomputed actions instead if it needs noise.
            length: number of steps; required with a callable policy.
            noise: optional uniform noise `[B, L, stoch, classes]`.

        Returns:
            `(carry, feat)`, feat holding `deter`, `stoch`, the prior `logit`
            and the `action` used at each step, each `[B, L, ...]`.
        """
        carry = self._cast_carry(carry)
        batch = ops.shape(carry["deter"])[0]
        if callable(policy):
            if length is None:
                raise ValueError(
                    "imagine() needs `length` when `policy` is a callable."
                )
            noise = self.draw_noise((batch, length)) if noise is None else noise
            xs = {"noise": _time_major(noise)}

            def step(carry, x):
                frozen = {k: ops.stop_gradient(v) for k, v in carry.items()}
                action = self.prepare_action(policy(frozen))
                carry, feat = self._img_step(carry, action, x["noise"])
                return carry, {**feat, "action": action}

        else:
            actions = self.prepare_action(policy)
            steps = ops.shape(actions)[1]
            if length is not None and length != steps:
                raise ValueError(f"imagine() got {steps} actions but length={length}.")
            noise = self.draw_noise((batch, steps)) if noise is None else noise
            xs = {"action": _time_major(actions), "noise": _time_major(noise)}

            def step(carry, x):
                carry, feat = self._img_step(carry, x["action"], x["noise"])
                return carry, {**feat, "action": x["action"]}

        carry, feat = backend.scan(step, carry, xs, unroll=self.unroll)
        return carry, {k: _time_major(v) for k, v in feat.items()}

    def call(self, tokens, prev_action, is_first):
        """Posterior features of a sequence from the zero state (see `observe`)."""
        carry = self.initial(ops.shape(tokens)[0])
        return self.observe(carry, tokens, prev_action, is_first)[1]

    # ----------------------------------------------------------------- losses

    def kl_losses(self, post_logit, prior_logit, free_nats=1.0):
        """DreamerV3's dynamics and representation losses.

        `dyn = max(free_nats, KL(sg(post) || prior))` and
        `rep = max(free_nats, KL(post || sg(prior)))`, each summed over the
        latents and clipped per (batch, time) entry.

        Returns:
            dict with `dyn` and `rep` (`[B, T]`) and the entropies `dyn_ent`
            (prior) and `rep_ent` (posterior), each `[B, T]`.
        """
        sg = ops.stop_gradient
        post_logit = ops.convert_to_tensor(post_logit)
        prior_logit = ops.convert_to_tensor(prior_logit)
        dyn = ops.sum(kdops.categorical_kl(sg(post_logit), prior_logit), -1)
        rep = ops.sum(kdops.categorical_kl(post_logit, sg(prior_logit)), -1)
        if free_nats:
            dyn = ops.maximum(dyn, free_nats)
            rep = ops.maximum(rep, free_nats)
        return {
            "dyn": dyn,
            "rep": rep,
            "dyn_ent": ops.sum(kdops.categorical_entropy(prior_logit), -1),
            "rep_ent": ops.sum(kdops.categorical_entropy(post_logit), -1),
        }

    def _cast_carry(self, carry):
        return {
            "deter": ops.cast(carry["deter"], self.compute_dtype),
            "stoch": ops.cast(carry["stoch"], self.compute_dtype),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "act_space": self.act_space.get_config(),
            "deter": self.deter,
            "hidden": self.hidden,
            "stoch": self.stoch,
            "classes": self.classes,
            "blocks": self.blocks,
            "dynlayers": self.dynlayers,
            "imglayers": self.imglayers,
            "obslayers": self.obslayers,
            "unimix": self.unimix,
            "absolute": self.absolute,
            "act": self.act,
            "unroll": self.unroll,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["act_space"] = space_from_config(config["act_space"])
        return cls(**config)


def _time_major(x):
    """Swaps the first two axes (batch-major <-> time-major)."""
    return ops.swapaxes(x, 0, 1)
