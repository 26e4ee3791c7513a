"""DreamerV3's agent: the world model, an actor and a critic, trained with `fit`."""

import keras
from keras import ops

from keras_dreamer import backend
from keras_dreamer import fitting
from keras_dreamer import posteriors
from keras_dreamer import presets
from keras_dreamer import returns
from keras_dreamer.batch import RESERVED_KEYS
from keras_dreamer.layers.actor import Actor
from keras_dreamer.layers.critic import Critic
from keras_dreamer.layers.normalizer import ReturnNormalizer
from keras_dreamer.policy import ActingWeights
from keras_dreamer.policy import AgentPolicy
from keras_dreamer.spaces import as_act_space
from keras_dreamer.spaces import as_obs_space
from keras_dreamer.world_model import WorldModel

_KERAS_KWARGS = ("name", "dtype", "trainable")

# Per-step train logs of the actor-critic, besides the world model's.
AGENT_LOG_KEYS = (
    "loss/policy",
    "loss/value",
    "loss/repval",
    "ret",
    "ret_min",
    "ret_max",
    "ret_rate",
    "retnorm/lo",
    "retnorm/scale",
    "val",
    "slowval",
    "tar",
    "adv",
    "adv_std",
    "adv_mag",
    "rew",
    "con",
    "weight",
    "ent/action",
)


@keras.saving.register_keras_serializable(package="keras_dreamer")
class Agent(fitting.DreamerTraining, keras.Model):
    """DreamerV3: a world model, and an actor and critic that learn in imagination.

    `agent.world_model` is a `kd.WorldModel`; the agent adds an `Actor`, a
    `Critic` with its slow copy and a `ReturnNormalizer`, all trained by one
    optimizer (LaProp by default) on one loss. A train step on a replay batch
    `[B, T]`:

    1. the world-model losses, unchanged (see `kd.WorldModel`);
    2. imagination from every posterior state (B * T starts, no gradient into
       the world model), `imag_length` H = 15 prior steps with actions
       sampled from the actor;
    3. lambda-returns `R` (lambda 0.95) on the predicted rewards, continue
       probabilities (the discount is in them) and critic values;
       weights `w_i = prod_{j<=i} c_j`; advantages `(R - v) / S` with `S`
       the return normaliser's scale (5th-95th percentile EMA, at least 1);
    4. `loss/policy = mean(-sg(w) * (log pi(a) * sg(A) + actent * H[pi]))`;
       `loss/value = mean(sg(w) * (CE(R) + slowreg * CE(v_slow)))`, two-hot
       cross-entropies; `loss/repval`: the critic on the replayed posterior
       states against lambda-returns along the batch bootstrapped with the
       imagined returns, which also trains the encoder and RSSM;
    5. total = world-model loss + policy + value + 0.3 * repval (the scales
       are `loss_scales`); the slow critic and the normaliser update inside
       the step.

    Acting: `agent.policy` is a stateful batched policy for a
    `kd.data.Collector` (it keeps the posterior state across env steps and
    resets it where `is_first`); `agent.make_policy("eval")` makes another
    one; `agent.policy_step` is the functional step.

    Args:
        obs_space: dict of observation key to space or shape (as for
            `kd.WorldModel`).
        act_space: `kd.Discrete(n)`, `kd.Box(shape, low, high)` with finite
            bounds, or an int.
        preset: a name from `kd.presets.PRESETS`; sets the world model's
            sizes and the actor's and critic's width (`units`).
        seed: seed of the latent and action noise.
        world_model: an existing `kd.WorldModel` to build the agent around
            (its preset and overrides then apply; `preset` is ignored).
        **kwargs: hyperparameter overrides: any key of
            `kd.presets.DEFAULTS` (world model) or `kd.presets.AGENT_DEFAULTS`
            (actor-critic), `loss_scales` (with `policy`, `value`, `repval`
            besides the world model's), and Keras's `name`, `dtype`,
            `trainable`.

    Returns:
        `call(batch)` returns the world model's outputs on the batch.

    Examples:
        >>> import numpy as np
        >>> import keras_dreamer as kd
        >>> agent = kd.Agent({"image": (16, 16, 3)}, kd.Discrete(3),
        ...                  preset="debug", mults=(4, 4))
        >>> agent.compile()
        >>> obs = {"image": np.zeros((2, 16, 16, 3), np.uint8),
        ...        "is_first": np.array([True, True])}
        >>> agent.policy(obs).shape
        (2, 3)
    """

    def __init__(
        self,
        obs_space,
        act_space,
        preset="size12m",
        seed=None,
        world_model=None,
        **kwargs,
    ):
        keras_kwargs = {k: kwargs.pop(k) for k in _KERAS_KWARGS if k in kwargs}
        super().__init__(autocast=False, **keras_kwargs)
        if world_model is not None:
            # Adopt a built world model: its preset and overrides are ours.
            if not isinstance(world_model, WorldModel):
                raise ValueError(
                    f"world_model must be a kd.WorldModel, got {type(world_model)}."
                )
            preset = world_model.preset
            kwargs = {**world_model.overrides, **kwargs}
        self.preset = preset
        self.seed = seed
        self._overrides = dict(kwargs)
        # Checked here, with the agent's keys, before the world model sees them.
        obs_keys = [k for k in obs_space if k not in RESERVED_KEYS]
        presets.check_loss_scales(kwargs.get("loss_scales"), obs_keys, agent=True)
        wm_overrides, config = presets.resolve_agent(preset, **kwargs)
        self.agent_config = config
        if world_model is None:
            world_model = WorldModel(
                obs_space,
                act_space,
                preset=preset,
                seed=seed,
                dtype=self.dtype_policy,
                name="world_model",
                **wm_overrides,
            )
        else:
            spaces = {
                k: as_obs_space(v, k)
                for k, v in obs_space.items()
                if k not in RESERVED_KEYS
            }
            if (spaces, as_act_space(act_space)) != (
                world_model.obs_spaces,
                world_model.act_space,
            ):
                raise ValueError(
                    f"The world model's spaces {world_model.obs_spaces}, "
                    f"{world_model.act_space} differ from the agent's "
                    f"{spaces}, {as_act_space(act_space)}."
                )
        self.world_model = world_model
        wm = self.world_model
        self.act_space = wm.act_space
        units, act = wm.config["units"], wm.config["act"]
        kw = {"dtype": self.dtype_policy}
        self.actor = Actor(
            self.act_space,
            units=units,
            layers=config["actor_layers"],
            act=act,
            unimix=config["actor_unimix"],
            minstd=config["actor_minstd"],
            maxstd=config["actor_maxstd"],
            outscale=config["actor_outscale"],
            name="actor",
            **kw,
        )
        self.critic = Critic(
            units=units,
            layers=config["critic_layers"],
            bins=config["critic_bins"],
            act=act,
            outscale=config["critic_outscale"],
            slow_rate=config["slow_rate"],
            slow_every=config["slow_every"],
            name="critic",
            **kw,
        )
        self.retnorm = ReturnNormalizer(
            low=config["retnorm_low"],
            high=config["retnorm_high"],
            rate=config["retnorm_rate"],
            limit=config["retnorm_limit"],
            name="retnorm",
        )
        self.noise_generator = keras.random.SeedGenerator(seed, name="agent_noise")
        horizon = wm.config["horizon"]
        self.discount = 1.0 - 1.0 / horizon if horizon else 1.0
        self.step_values = fitting.StepValues(
            ("loss", *wm.loss_names, "dyn_ent", "rep_ent", *AGENT_LOG_KEYS)
            + (fitting.FRAMES_KEY,)
        )
        feat = wm.config["deter"] + wm.config["stoch"] * wm.config["classes"]
        self.actor.build((None, feat))
        self.critic.build((None, feat))
        self.retnorm.build()
        self.built = True
        # The agent's own: a nested model's metrics are not in its train state.
        self.trained_posteriors = posteriors.TrainedPosteriors()
        self.acting_weights = ActingWeights(self)
        self._policy = None
        # Imagination's loop body, as the backend runs it best (compiled on
        # an eager backend, see `backend.gradient_free_step`).
        self._imagine_step = backend.gradient_free_step(self._imagination_step)

    # ------------------------------------------------------------ training

    def call(self, batch, training=False, noise=None):
        """The world model's outputs on a batch (see `WorldModel.call`)."""
        return self.world_model(batch, training=training, noise=noise)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        values = self.loss_metrics(x, y_pred, update=training)
        self.step_values.update_state({**values, **fitting.frames_log(x)})
        posteriors.record(self.trained_posteriors, x, y_pred)
        return values["loss"]

    def loss_metrics(self, batch, outputs=None, update=False, noise=None):
        """The total loss, every loss term and the actor-critic statistics.

        Args:
            batch: a sequence batch `[B, T]`.
            outputs: the world model's outputs on `batch` (computed if None).
            update: whether to advance the slow critic and the return
                normaliser (True in a train step, False for reports).
            noise: optional dict of the noise every sample of the step is
                drawn from (drawn from the agent's seed where absent):
                `posterior` `[B, T, stoch, classes]` (used when `outputs` is
                None), and imagination's `action` `[H, B * T, A]` and
                `latent` `[H, B * T, stoch, classes]` (see `imagine`).
                `kd.reference.onehot_noise` makes the noise that draws given
                samples, e.g. the reference's.

        Returns:
            dict of float32 scalars: `loss` (the scaled total), the world
            model's `loss/*`, `dyn_ent`, `rep_ent`, and `AGENT_LOG_KEYS`.
        """
        noise = dict(noise or {})
        if outputs is None:
            outputs = self(batch, noise=noise.get("posterior"))
        if update:
            self.critic.update_slow()
        values = self.world_model.loss_metrics(batch, outputs)
        imagination = None
        if "action" in noise or "latent" in noise:
            imagination = {k: noise[k] for k in ("action", "latent")}
        values.update(self._actor_critic(batch, outputs, update, imagination))
        scales = self.agent_config["loss_scales"]
        values["loss"] = values["loss"] + sum(
            scales[k] * values[f"loss/{k}"] for k in ("policy", "value", "repval")
        )
        return values

    def actor_critic_terms(self, batch, outputs, update=False, noise=None):
        """Every quantity of the actor-critic losses, unreduced.

        Args:
            batch: a sequence batch `[B, T]` (or `[B, T + 1]` with replay
                context, see `WorldModel.split_context`).
            outputs: the world model's outputs on `batch` (`call`).
            update: whether to update the return normaliser first.
            noise: optional imagination noise (see `imagine`).

        Returns:
            dict of tensors (N = B * T starts, H = `imag_length`): `traj`
            (see `imagine`), `feat` `[N, H + 1, F]`, `reward`, `cont`,
            `value`, `slow_value` `[N, H + 1]`, `return` and `weight` `[N,
            H]`, `offset` and `scale` (the normaliser), `advantage`,
            `logits` (the actor's distribution on states 0..H-1), `logp`,
            `entropy`, `policy_loss` and `value_loss` `[N, H]`,
            `replay_target`, `replay_slow` and `repval_loss` `[B, T - 1]`.
        """
        wm, actor, critic = self.world_model, self.actor, self.critic
        config = self.agent_config
        _, batch = wm.split_context(batch)
        shape = ops.shape(batch["is_first"])
        batch_size, length = shape[0], shape[1]
        start = {
            k: ops.stop_gradient(ops.reshape(outputs[k], (-1, *outputs[k].shape[2:])))
            for k in ("deter", "stoch")
        }
        traj = self.imagine(start, config["imag_length"], noise=noise)
        feat = ops.stop_gradient(wm.feat_vector(traj))  # [N, H + 1, F]
        reward = ops.stop_gradient(wm.reward_head.predict_value(wm.reward_head(feat)))
        cont = ops.stop_gradient(wm.cont_head.predict_value(wm.cont_head(feat)))
        logits = critic(feat)
        value = critic.value(logits)
        slow_value = critic.slow_value(feat)
        ret = returns.lambda_return(
            reward, cont, ops.stop_gradient(value), config["lam"]
        )
        weight = ops.stop_gradient(ops.cumprod(cont, axis=1))[:, :-1]
        if update:
            self.retnorm.update(ret)
        offset, scale = self.retnorm.stats()
        adv = (ret - ops.stop_gradient(value[:, :-1])) / scale
        dist = actor(feat[:, :-1])
        logp = actor.log_prob(dist, ops.stop_gradient(traj["action"]))
        entropy = actor.entropy(dist)
        policy_loss = -weight * (
            logp * ops.stop_gradient(adv) + config["actent"] * entropy
        )
        value_loss = weight * (
            critic.loss(logits[:, :-1], ret)
            + config["slowreg"] * critic.loss(logits[:, :-1], slow_value[:, :-1])
        )

        # The replay value loss: the critic on the replayed posterior states
        # (with gradient into the world model), towards lambda-returns along
        # the batch bootstrapped by the imagined returns.
        replay_feat = wm.feat_vector(outputs)
        replay_logits = critic(replay_feat)
        bootstrap = ops.reshape(ret[:, 0], (batch_size, length))
        target = returns.replay_return(
            batch["reward"],
            batch["is_last"],
            batch["is_terminal"],
            ops.stop_gradient(bootstrap),
            self.discount,
            config["lam"],
        )
        replay_slow = critic.slow_value(replay_feat)
        mask = 1.0 - ops.cast(batch["is_last"][:, :-1], "float32")
        repval_loss = mask * (
            critic.loss(replay_logits[:, :-1], target)
            + config["slowreg"]
            * critic.loss(replay_logits[:, :-1], replay_slow[:, :-1])
        )
        return {
            "traj": traj,
            "feat": feat,
            "reward": reward,
            "cont": cont,
            "value": value,
            "slow_value": slow_value,
            "return": ret,
            "weight": weight,
            "offset": offset,
            "scale": scale,
            "advantage": adv,
            "dist": dist,
            "logp": logp,
            "entropy": entropy,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "replay_target": target,
            "replay_slow": replay_slow,
            "repval_loss": repval_loss,
        }

    def _actor_critic(self, batch, outputs, update, noise=None):
        terms = self.actor_critic_terms(batch, outputs, update, noise=noise)
        offset, scale, adv = terms["offset"], terms["scale"], terms["advantage"]
        normed = (terms["return"] - offset) / scale
        return {
            "loss/policy": ops.mean(terms["policy_loss"]),
            "loss/value": ops.mean(terms["value_loss"]),
            "loss/repval": ops.mean(terms["repval_loss"]),
            "ret": ops.mean(normed),
            "ret_min": ops.min(normed),
            "ret_max": ops.max(normed),
            "ret_rate": ops.mean(ops.cast(ops.abs(normed) >= 1.0, "float32")),
            "retnorm/lo": offset,
            "retnorm/scale": scale,
            "val": ops.mean(terms["value"]),
            "slowval": ops.mean(terms["slow_value"]),
            "tar": ops.mean(terms["return"]),
            "adv": ops.mean(adv),
            "adv_std": ops.std(adv),
            "adv_mag": ops.mean(ops.abs(adv)),
            "rew": ops.mean(terms["reward"]),
            "con": ops.mean(terms["cont"]),
            "weight": ops.mean(terms["weight"]),
            "ent/action": ops.mean(terms["entropy"]),
        }

    def imagine(self, start, length, noise=None):
        """Imagined trajectories from `start` with actions from the actor.

        Args:
            start: the start states `{"deter": [N, D], "stoch": [N, S, K]}`.
            length: imagined steps H.
            noise: optional `{"action": [H, N, A], "latent": [H, N, S, K]}`
                (time-major) noise; drawn from the agent's seed if None.

        Returns:
            dict with `deter` `[N, H + 1, D]` and `stoch` `[N, H + 1, S, K]`
            (index 0 is the start) and `action` `[N, H, A]` (the actor's
            sample at states 0..H-1, in the actor's units). No gradient flows
            into the world model or the start states.
        """
        rssm, actor = self.world_model.rssm, self.actor
        start = {k: ops.stop_gradient(v) for k, v in start.items()}
        count = ops.shape(start["deter"])[0]
        if noise is None:
            noise = {
                "action": actor.draw_noise((length, count), self.noise_generator),
                "latent": keras.random.uniform(
                    (length, count, rssm.stoch, rssm.classes),
                    seed=self.noise_generator,
                ),
            }

        start = {k: ops.cast(v, rssm.compute_dtype) for k, v in start.items()}
        # A fresh function per call: JAX caches a traced loop body by the
        # function's identity, and this one reads the (traced) weights.
        _, ys = backend.scan(lambda c, x: self._imagine_step(c, x), start, noise)
        traj = {
            k: ops.concatenate(
                [ops.expand_dims(start[k], 1), ops.swapaxes(ys[k], 0, 1)], 1
            )
            for k in ("deter", "stoch")
        }
        traj["action"] = ops.swapaxes(ys["action"], 0, 1)
        return traj

    def _imagination_step(self, carry, x):
        actor = self.actor
        dist = actor(self.world_model.feat_vector(carry))
        action = actor.sample(dist, x["action"])
        carry, _ = self.world_model.rssm.img_step(
            carry, actor.to_env(action), noise=x["latent"]
        )
        carry = {k: ops.stop_gradient(v) for k, v in carry.items()}
        return carry, {**carry, "action": action}

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, checking the data first and keeping the policy fresh.

        As `WorldModel.fit`; besides, a callback hands the latest weights to
        `agent.policy` (and every policy from `make_policy`) after every
        train step, so a collector acting during `fit` uses the current
        actor on every backend.
        """
        try:
            return fitting.guarded_fit(
                self,
                super().fit,
                x,
                y,
                *args,
                callbacks=[
                    *(callbacks or []),
                    _PolicySync(self),
                    *posteriors.write_back_callbacks(
                        self,
                        x,
                        self.trained_posteriors,
                        self.world_model.config,
                    ),
                ],
                check_batch=self.world_model.check_batch,
                **kwargs,
            )
        finally:
            self.acting_weights.end()

    @classmethod
    def from_reference(cls, directory, obs_space=None, act_space=None, dtype=None):
        """The agent of a checkpoint of the reference DreamerV3 (danijar/dreamerv3).

        Reads the run's `config.yaml` and its newest (or the given)
        checkpoint with numpy alone, builds the matching agent and copies
        every parameter, the slow critic, the return normaliser and the
        optimizer state. See `kd.reference.from_reference` and
        `docs/reference.md`.

        Args:
            directory: the reference run's logdir or one `ckpt/<name>`
                folder of it.
            obs_space: optional observation spaces (inferred by default).
            act_space: optional action space (inferred by default).
            dtype: optional dtype policy (default: the run's compute dtype).

        Returns:
            A compiled `kd.Agent`.
        """
        from keras_dreamer import reference

        return reference.from_reference(
            directory, obs_space=obs_space, act_space=act_space, dtype=dtype
        )

    # ------------------------------------------------------------ acting

    @property
    def policy(self):
        """The training policy: a stateful `AgentPolicy` that samples actions."""
        if self._policy is None:
            self._policy = AgentPolicy(self, mode="train", seed=self.seed)
        return self._policy

    def make_policy(self, mode="eval", seed=None):
        """A new stateful policy with its own carry (e.g. for eval envs).

        Args:
            mode: "train" (sample) or "eval" (sample, or the mode when the
                agent was built with `eval_mode="mode"`).
            seed: seed of its action and latent noise.

        Returns:
            An `AgentPolicy`.
        """
        return AgentPolicy(self, mode=mode, seed=seed)

    def initial_policy_carry(self, batch_size):
        """The acting state before the first step: zero latents and action."""
        carry = self.world_model.initial_carry(batch_size)
        carry["action"] = ops.zeros((batch_size, self.act_space.width), "float32")
        return carry

    def policy_step(self, carry, obs, mode="train", noise=None):
        """One acting step for a batch of envs (functional).

        Observes `obs` with one posterior step (the state and previous action
        are zeroed where `obs["is_first"]`), then samples the actor (or takes
        its mode in "eval" mode when the agent's `eval_mode` is "mode").

        Args:
            carry: from `initial_policy_carry(N)` or the previous step.
            obs: dict of `[N, ...]` arrays: the obs keys and `is_first`.
            mode: "train" or "eval".
            noise: optional `{"action": [N, A], "latent": [N, S, K]}`.

        Returns:
            `(carry, action)`: the new carry and float32 actions `[N, A]` as
            the env takes them (one-hot; `Box` actions in its bounds).
        """
        if mode not in ("train", "eval"):
            raise ValueError(f"policy mode must be 'train' or 'eval', got {mode!r}.")
        wm, actor = self.world_model, self.actor
        count = ops.shape(obs["is_first"])[0]
        if noise is None:
            rssm = wm.rssm
            noise = {
                "action": actor.draw_noise((count,), self.noise_generator),
                "latent": keras.random.uniform(
                    (count, rssm.stoch, rssm.classes), seed=self.noise_generator
                ),
            }
        tokens = wm.encoder({k: obs[k] for k in wm.obs_spaces})
        state = {"deter": carry["deter"], "stoch": carry["stoch"]}
        state, feat = wm.rssm.obs_step(
            state, carry["action"], tokens, obs["is_first"], noise=noise["latent"]
        )
        dist = actor(wm.feat_vector(feat))
        if mode == "eval" and self.agent_config["eval_mode"] == "mode":
            action = actor.mode(dist)
        else:
            action = actor.sample(dist, noise["action"])
        action = ops.cast(actor.to_env(action), "float32")
        return {**state, "action": action}, action

    # ------------------------------------------------------------ reports

    def check_batch(self, batch, min_length=1):
        """Raises a `ValueError` naming what is wrong with `batch`, if anything."""
        return self.world_model.check_batch(batch, min_length=min_length)

    def report(self, batch, max_sequences=6):
        """The world model's report (losses and open-loop videos) on a batch."""
        return self.world_model.report(batch, max_sequences=max_sequences)

    @property
    def obs_spaces(self):
        return self.world_model.obs_spaces

    # ------------------------------------------------------------ serialization

    def get_config(self):
        wm = self.world_model
        config = wm.get_config()
        config.update(
            {
                "name": self.name,
                "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy),
                "preset": self.preset,
                "seed": self.seed,
            }
        )
        config.update(self._overrides)
        if "mults" in config:
            config["mults"] = list(config["mults"])
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


class _PolicySync(keras.callbacks.Callback):
    """Hands the agent's current weights to its policies during `fit`.

    On JAX, `fit` keeps the weights outside the variables between epochs;
    reading `self.model` (Keras's public way to sync the train state back
    into the variables) before each snapshot keeps the policies current. On
    TensorFlow the variables are always current and this is cheap.
    """

    def __init__(self, agent, every=1):
        super().__init__()
        self._agent = agent
        self.every = every
        self._count = 0

    def on_train_begin(self, logs=None):
        self._agent.acting_weights.begin()

    def on_train_batch_end(self, batch, logs=None):
        self._count += 1
        if self._count % self.every == 0:
            self.model  # noqa: B018 -- Keras syncs the JAX train state on read
            self._agent.acting_weights.refresh()
