"""DreamerV3's world model as a `keras.Model` trained with `fit`."""

import inspect

import keras
import numpy as np
from keras import ops

from keras_dreamer import fitting
from keras_dreamer import openloop
from keras_dreamer import ops as kdops
from keras_dreamer import posteriors
from keras_dreamer import presets
from keras_dreamer.batch import LATENT_KEYS
from keras_dreamer.batch import RESERVED_KEYS
from keras_dreamer.batch import check_batch
from keras_dreamer.layers.decoder import Decoder
from keras_dreamer.layers.encoder import Encoder
from keras_dreamer.layers.encoder import serialize_obs_space
from keras_dreamer.layers.heads import ContinueHead
from keras_dreamer.layers.heads import RewardHead
from keras_dreamer.layers.rssm import RSSM
from keras_dreamer.spaces import Discrete
from keras_dreamer.spaces import as_act_space
from keras_dreamer.spaces import as_obs_space

# The keyword arguments of `keras.layers.Layer` (and so of `keras.Model`):
# `name`, `dtype`, `trainable`, `autocast`, `activity_regularizer`.
_KERAS_KWARGS = tuple(
    name
    for name, parameter in inspect.signature(
        keras.layers.Layer.__init__
    ).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


@keras.saving.register_keras_serializable(package="keras_dreamer")
class WorldModel(fitting.DreamerTraining, keras.Model):
    """DreamerV3's world model: encoder, RSSM, decoder, reward and continue heads.

    Train it with `compile()` (LaProp by default) and `fit` on sequence
    batches (see `keras_dreamer.batch`); `compute_loss` is overridden, so no
    `loss=` is needed. The loss is

        sum_k scale_k * mean_{B,T}(loss_k),

    with `loss/<obs key>` (image: sum of squared errors over H, W, C of the
    sigmoid output against `uint8 / 255`; vectors: symlog MSE), `loss/rew`
    (two-hot cross-entropy), `loss/con` (Bernoulli NLL), `loss/dyn =
    max(free_nats, KL(sg(post) || prior))` and `loss/rep = max(free_nats,
    KL(post || sg(prior)))`. The train logs carry each step's `loss`,
    `loss/*`, `dyn_ent`, `rep_ent`, `opt/grad_norm` and `opt/lr` (not running
    means).

    The RSSM is fed the previous action (`action[:, t-1]`; zero at the first
    step of a batch and wherever `is_first`).

    Replay context (DreamerV3's `replay_context 1`): a batch that also holds
    each step's stored posterior latent (`latent/deter`, `latent/stoch`) has
    one leading context step; its latent and action start the RSSM and the
    losses cover the other T steps (see `split_context`).

    Args:
        obs_space: dict of observation key to `kd.Box`, `kd.Discrete` or a
            shape tuple (rank 2-3 tuples are uint8 images). The keys `reward`,
            `is_first`, `is_last`, `is_terminal` and `action` are ignored, so
            an environment's observation space can be passed as it is.
        act_space: `kd.Discrete(n)`, `kd.Box(shape, low, high)` or an int.
        preset: a name from `keras_dreamer.presets.PRESETS` ("debug",
            "size1m", "size12m", ..., "size400m"), or None for the reference
            defaults (size200m).
        seed: seed of the latent-sampling noise (weights use Keras's global
            seed, `keras.utils.set_random_seed`).
        **kwargs: hyperparameter overrides (any key of
            `keras_dreamer.presets.DEFAULTS`, e.g. `deter=1024`,
            `loss_scales={"dyn": 0.5}`) and the standard `keras.Model`
            arguments `name`, `dtype`, `trainable`, `autocast` (False by
            default) and `activity_regularizer`.

    Examples:
        A tiny model on 16x16 images observes a batch, imagines from its
        last state, decodes and reports (`wm.fit(batch)` trains it; see
        `docs/training.md`):

        >>> import numpy as np
        >>> import keras_dreamer as kd
        >>> wm = kd.WorldModel({"image": (16, 16, 3)}, kd.Discrete(3),
        ...                    preset="debug", mults=(4, 4))
        >>> wm.compile()
        >>> batch = {
        ...     "image": np.zeros((2, 6, 16, 16, 3), np.uint8),
        ...     "action": np.eye(3, dtype=np.float32)[np.zeros((2, 6), int)],
        ...     "reward": np.zeros((2, 6), np.float32),
        ...     "is_first": np.eye(6, dtype=bool)[[0, 0]],
        ...     "is_last": np.zeros((2, 6), bool),
        ...     "is_terminal": np.zeros((2, 6), bool),
        ... }
        >>> carry, feat = wm.observe(wm.initial_carry(2), batch)
        >>> tuple(feat["deter"].shape), tuple(feat["stoch"].shape)
        ((2, 6, 8), (2, 6, 2, 4))
        >>> carry, imagined = wm.imagine(carry, batch["action"][:, :3])
        >>> tuple(wm.decode(imagined)["image"].shape)
        (2, 3, 16, 16, 3)
        >>> wm.report(batch)["openloop/image"].shape
        (16, 52, 40, 3)
    """

    def __init__(self, obs_space, act_space, preset="size12m", seed=None, **kwargs):
        keras_kwargs = {k: kwargs.pop(k) for k in _KERAS_KWARGS if k in kwargs}
        self._extra_keras_kwargs = {
            k: v
            for k, v in keras_kwargs.items()
            if k not in ("name", "dtype", "trainable") and v is not None
        }
        # No input autocasting by default: rewards and actions stay float32
        # under mixed precision; the layers cast what they compute with.
        keras_kwargs.setdefault("autocast", False)
        super().__init__(**keras_kwargs)
        self.preset = preset
        self.seed = seed
        if not isinstance(obs_space, dict):
            raise ValueError(
                f"obs_space must be a dict of key -> space or shape, got {obs_space!r}."
            )
        obs_keys = [k for k in obs_space if k not in RESERVED_KEYS]
        presets.check_loss_scales(kwargs.get("loss_scales"), obs_keys)
        self.config = presets.resolve(preset, **kwargs)
        self._overrides = dict(kwargs)
        self.obs_spaces = {
            k: as_obs_space(v, k)
            for k, v in obs_space.items()
            if k not in RESERVED_KEYS
        }
        if not self.obs_spaces:
            raise ValueError(f"obs_space has no observation keys: {sorted(obs_space)}.")
        self.act_space = as_act_space(act_space)
        c = self.config
        kw = {"dtype": self.dtype_policy}
        self.encoder = Encoder(
            self.obs_spaces,
            depth=c["depth"],
            mults=c["mults"],
            kernel=c["kernel"],
            units=c["units"],
            layers=c["mlp_layers"],
            act=c["act"],
            symlog=c["symlog_inputs"],
            name="encoder",
            **kw,
        )
        self.rssm = RSSM(
            self.act_space,
            deter=c["deter"],
            hidden=c["hidden"],
            stoch=c["stoch"],
            classes=c["classes"],
            blocks=c["blocks"],
            dynlayers=c["dynlayers"],
            imglayers=c["imglayers"],
            obslayers=c["obslayers"],
            unimix=c["unimix"],
            absolute=c["absolute"],
            act=c["act"],
            unroll=c["unroll"],
            seed=seed,
            name="rssm",
            **kw,
        )
        self.decoder = Decoder(
            self.obs_spaces,
            depth=c["depth"],
            mults=c["mults"],
            kernel=c["kernel"],
            units=c["units"],
            layers=c["mlp_layers"],
            act=c["act"],
            bspace=c["bspace"],
            name="decoder",
            **kw,
        )
        self.reward_head = RewardHead(
            c["units"], c["head_layers"], c["bins"], c["act"], name="reward", **kw
        )
        self.cont_head = ContinueHead(
            c["units"],
            c["head_layers"],
            c["act"],
            horizon=c["horizon"],
            name="cont",
            **kw,
        )
        self.loss_names = tuple(
            [f"loss/{k}" for k in sorted(self.obs_spaces)]
            + ["loss/rew", "loss/con", "loss/dyn", "loss/rep"]
        )
        self._report_functions = {}
        self.step_values = fitting.StepValues(
            ("loss", *self.loss_names, "dyn_ent", "rep_ent", fitting.FRAMES_KEY)
        )
        self.trained_posteriors = posteriors.TrainedPosteriors()
        self._build_layers()

    def _build_layers(self):
        self.encoder.build()
        self.rssm.build((None, None, self.encoder.output_width))
        c = self.config
        feat = c["deter"] + c["stoch"] * c["classes"]
        self.decoder.build((None, c["deter"]), (None, c["stoch"], c["classes"]))
        self.reward_head.build((None, feat))
        self.cont_head.build((None, feat))
        self.built = True

    # ------------------------------------------------------------ training

    def call(self, batch, training=False, noise=None):
        """Posterior features and all predictions for a batch.

        Args:
            batch: a sequence batch (with a leading context step when it holds
                `latent/deter` and `latent/stoch`, see `split_context`).
            training: unused (the model has no dropout); kept for Keras.
            noise: optional uniform noise `[B, T, stoch, classes]` for the
                posterior samples, for exactly reproducible outputs.

        Returns:
            dict with `deter`, `stoch`, `post` and `prior` logits, `recon`
            (dict of decoded obs: images in [0, 1]), `reward` (two-hot logits)
            and `cont` (logits), each `[B, T, ...]` (the steps after the
            context).
        """
        self.check_batch(batch)
        carry, batch = self.split_context(batch)
        if carry is None:
            carry = self.initial_carry(ops.shape(batch["is_first"])[0])
        _, feat = self.observe(carry, batch, noise=noise)
        return self._predict(feat)

    def split_context(self, batch):
        """The replay context of a batch: its starting carry and trained steps.

        A batch holding each step's stored posterior latent (`latent/deter`
        `[B, T + 1, deter]`, `latent/stoch` `[B, T + 1, stoch, classes]`)
        starts from its first step: the RSSM's carry is that step's latent
        and the previous action of the next step is that step's action (both
        zeroed where the next step `is_first`), as the reference's
        `_apply_replay_context`. The other T steps are trained on.

        Args:
            batch: a sequence batch.

        Returns:
            `(carry, steps)`: the carry `{"deter", "stoch", "action"}` and the
            batch of the T trained steps (without the latent keys); `(None,
            batch)` for a batch without latents.

        Examples:
            >>> import numpy as np
            >>> import keras_dreamer as kd
            >>> wm = kd.WorldModel({"image": (16, 16, 3)}, kd.Discrete(3),
            ...                    preset="debug", mults=(4, 4))
            >>> batch = {"action": np.zeros((2, 6), "int32"),
            ...          "is_first": np.zeros((2, 6), bool),
            ...          "latent/deter": np.zeros((2, 6, 8), "float32"),
            ...          "latent/stoch": np.zeros((2, 6, 2, 4), "float32")}
            >>> carry, steps = wm.split_context(batch)
            >>> tuple(carry["deter"].shape), sorted(steps), steps["is_first"].shape
            ((2, 8), ['action', 'is_first'], (2, 5))
        """
        if LATENT_KEYS[0] not in batch:
            return None, batch
        carry = {
            "deter": batch[LATENT_KEYS[0]][:, 0],
            "stoch": batch[LATENT_KEYS[1]][:, 0],
            "action": self.rssm.prepare_action(batch["action"])[:, 0],
        }
        steps = {k: v[:, 1:] for k, v in batch.items() if k not in LATENT_KEYS}
        return carry, steps

    def _predict(self, feat):
        vector = self.feat_vector(feat)
        return {
            "deter": feat["deter"],
            "stoch": feat["stoch"],
            "post": feat["logit"],
            "prior": self.rssm.prior_logits(feat["deter"]),
            "recon": self.decoder(feat["deter"], feat["stoch"]),
            "reward": self.reward_head(vector),
            "cont": self.cont_head(vector),
        }

    def loss_terms(self, batch, outputs):
        """Per-step losses `[B, T]` by name, and the entropy metrics."""
        terms = {}
        for key, space in self.obs_spaces.items():
            pred = outputs["recon"][key]
            target = batch[key]
            if isinstance(space, Discrete):
                logp = ops.log_softmax(pred, -1)
                target = ops.one_hot(ops.cast(target, "int32"), space.n)
                terms[f"loss/{key}"] = -ops.sum(target * logp, -1)
            else:
                if space.dtype == "uint8":
                    target = ops.cast(target, "float32") / 255.0
                else:
                    target = kdops.symlog(ops.cast(target, "float32"))
                error = ops.square(ops.cast(pred, "float32") - target)
                axes = tuple(range(2, len(error.shape)))
                terms[f"loss/{key}"] = ops.sum(error, axes) if axes else error
        terms["loss/rew"] = self.reward_head.loss(outputs["reward"], batch["reward"])
        terms["loss/con"] = self.cont_head.loss(outputs["cont"], batch["is_terminal"])
        kl = self.rssm.kl_losses(
            outputs["post"], outputs["prior"], self.config["free_nats"]
        )
        terms["loss/dyn"], terms["loss/rep"] = kl["dyn"], kl["rep"]
        metrics = {
            "dyn_ent": ops.mean(kl["dyn_ent"]),
            "rep_ent": ops.mean(kl["rep_ent"]),
        }
        return terms, metrics

    def loss_scale(self, name):
        """The scale of the loss term `name` (`loss/<key>`)."""
        key = name.split("/", 1)[1]
        scales = self.config["loss_scales"]
        if key in scales:
            return scales[key]
        return scales["rec"]

    def loss_metrics(self, batch, outputs=None, noise=None):
        """The total `loss`, each `loss/*` mean and the entropies, as a dict.

        Args:
            batch: a sequence batch.
            outputs: the model's outputs on `batch`, computed if None.
            noise: the posterior noise when `outputs` is None (see `call`).

        Returns:
            dict of float32 scalars: `loss`, `loss/<key>` per decoded
            observation key, `loss/rew`, `loss/con`, `loss/dyn`, `loss/rep`,
            `dyn_ent`, `rep_ent`.
        """
        if outputs is None:
            outputs = self(batch, noise=noise)
        _, batch = self.split_context(batch)
        terms, metrics = self.loss_terms(batch, outputs)
        means = {name: ops.mean(value) for name, value in terms.items()}
        total = sum(self.loss_scale(name) * value for name, value in means.items())
        return {"loss": total, **means, **metrics}

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        values = self.loss_metrics(x, y_pred)
        self.step_values.update_state({**values, **fitting.frames_log(x)})
        posteriors.record(self.trained_posteriors, x, y_pred)
        return values["loss"]

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, checking the data's batch format first.

        A dict of arrays, a `tf.data.Dataset` (its `element_spec`) or a data
        source with a `batch_spec` attribute (e.g. `kd.data.Collector`) is
        checked before anything is traced, so a malformed batch fails at once
        with a `ValueError` that names the key. If training is interrupted
        (an exception, KeyboardInterrupt), callbacks with a true
        `close_on_interrupt` attribute (`DreamerReportCallback`) are closed,
        so their pending logs are written.
        """
        write_back = posteriors.write_back_callbacks(
            self, x, self.trained_posteriors, self.config
        )
        return fitting.guarded_fit(
            self,
            super().fit,
            x,
            y,
            *args,
            callbacks=[*(callbacks or []), *write_back],
            check_batch=self.check_batch,
            **kwargs,
        )

    # ------------------------------------------------------------ public API

    def check_batch(self, batch, min_length=1):
        """Raises a `ValueError` naming what is wrong with `batch`, if anything.

        With replay context (`latent/deter` and `latent/stoch`), both latents
        must be there with the RSSM's sizes, and T counts the context step.
        """
        context = [k for k in LATENT_KEYS if isinstance(batch, dict) and k in batch]
        lead = check_batch(
            batch,
            self.obs_spaces,
            self.act_space,
            min_length=min_length + (1 if context else 0),
        )
        if context:
            if len(context) != len(LATENT_KEYS):
                raise ValueError(
                    f"Replay context needs both {list(LATENT_KEYS)}; the batch "
                    f"has only {context}."
                )
            c = self.config
            for key, tail in zip(
                LATENT_KEYS, ((c["deter"],), (c["stoch"], c["classes"]))
            ):
                shape = tuple(batch[key].shape)
                if (
                    len(shape) != 2 + len(tail)
                    or tuple(shape[2:]) != tail
                    or any(
                        a is not None and b is not None and a != b
                        for a, b in zip(shape[:2], lead)
                    )
                ):
                    raise ValueError(
                        f"Batch key {key!r} has shape {shape}, expected "
                        f"{(*lead, *tail)} (batch, time including the context step, "
                        "latent)."
                    )
        return lead

    def initial_carry(self, batch_size):
        """The zero state `{"deter": [B, deter], "stoch": [B, stoch, classes]}`."""
        return self.rssm.initial(batch_size)

    def feat_vector(self, feat):
        """`concat(deter, flatten(stoch))`, the features the heads read."""
        stoch = feat["stoch"]
        flat = ops.reshape(
            stoch, (*ops.shape(stoch)[:-2], stoch.shape[-2] * stoch.shape[-1])
        )
        return ops.concatenate([feat["deter"], ops.cast(flat, feat["deter"].dtype)], -1)

    def previous_actions(self, batch, carry=None):
        """`action[:, t-1]` for every step; the first comes from `carry["action"]`
        if the carry holds one, else zeros."""
        action = self.rssm.prepare_action(batch["action"])
        first = ops.zeros_like(action[:, :1])
        if carry is not None and "action" in carry:
            first = ops.cast(ops.expand_dims(carry["action"], 1), action.dtype)
        return ops.concatenate([first, action[:, :-1]], 1)

    def observe(self, carry, batch, noise=None):
        """Posterior states over a batch of sequences.

        Args:
            carry: the state before the batch (`initial_carry(B)` or the
                carry of a previous `observe`; it may hold `action`, the last
                action taken, which then feeds the first step).
            batch: a sequence batch.
            noise: optional uniform noise `[B, T, stoch, classes]`.

        Returns:
            `(carry, feat)`: the final state (with the batch's last `action`)
            and `deter`, `stoch`, `logit` (posterior), each `[B, T, ...]`.
        """
        tokens = self.encoder({k: batch[k] for k in self.obs_spaces})
        prev_action = self.previous_actions(batch, carry)
        state = {"deter": carry["deter"], "stoch": carry["stoch"]}
        state, feat = self.rssm.observe(
            state, tokens, prev_action, batch["is_first"], noise=noise
        )
        last = self.rssm.prepare_action(batch["action"])[:, -1]
        return {**state, "action": last}, feat

    def imagine(self, carry, policy, length=None, noise=None):
        """Prior rollout from `carry` (see `RSSM.imagine`).

        Args:
            carry: the starting state.
            policy: actions `[B, L, A]` (the action fed before each imagined
                step) or a callable `policy(carry) -> [B, A]`.
            length: steps to imagine (required with a callable).
            noise: optional uniform noise `[B, L, stoch, classes]`.

        Returns:
            `(carry, feat)` with `deter`, `stoch`, `logit` (prior) and
            `action`, each `[B, L, ...]`.
        """
        state = {"deter": carry["deter"], "stoch": carry["stoch"]}
        return self.rssm.imagine(state, policy, length, noise=noise)

    def decode(self, feat):
        """Predictions from features: observations (images in [0, 1]), the
        expected `reward` and the continue probability `cont`."""
        vector = self.feat_vector(feat)
        return {
            **self.decoder(feat["deter"], feat["stoch"]),
            "reward": self.reward_head.predict_value(self.reward_head(vector)),
            "cont": self.cont_head.predict_value(self.cont_head(vector)),
        }

    # ------------------------------------------------------------ reports

    def report(self, batch, max_sequences=6):
        """Losses and open-loop video predictions on a batch (DreamerV3's report).

        The losses are computed on the whole batch without training. On the
        first `RB = min(max_sequences, B)` sequences the model observes the
        first `T // 2` steps, then imagines the rest from the logged actions
        with prior samples, and decodes both. Each image key gives a video
        (see `keras_dreamer.openloop.compose`): rows truth | model | error,
        green border while observing, red while imagining, 10 black frames
        appended, sequences side by side, shape `(T + 10, 3H + 4, RB (W + 4),
        C)`. The model part is compiled once per batch shape and never runs
        inside the train step.

        Args:
            batch: a sequence batch with T >= 2 (numpy arrays or tensors).
            max_sequences: the most sequences shown side by side.

        Returns:
            dict of numpy values: `loss`, `loss/<key>`..., `dyn_ent`,
            `rep_ent` (float32 scalars) and `openloop/<image key>` (uint8
            videos).
        """
        self.check_batch(batch, min_length=2)
        shown = min(max_sequences, int(batch["is_first"].shape[0]))
        key = ("report", shown)
        if self._report_functions.get(key) is None:
            self._report_functions[key] = fitting.compile_function(
                self, lambda b: self._report_tensors(b, shown)
            )
        outputs = self._report_functions[key](dict(batch))
        outputs = {
            k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in outputs.items()
        }
        metrics = {k: v for k, v in outputs.items() if not k.startswith("frames/")}
        _, batch = self.split_context(batch)
        observed = int(batch["is_first"].shape[1]) // 2
        for image_key in self.encoder.image_keys:
            truth = np.asarray(batch[image_key][:shown])
            if truth.ndim == 4:
                truth = truth[..., None]
            model = outputs[f"frames/{image_key}"]
            metrics[f"openloop/{image_key}"] = openloop.compose(truth, model, observed)
        return metrics

    def _report_tensors(self, batch, shown):
        metrics = self.loss_metrics(batch)
        if not self.encoder.image_keys:
            return metrics
        start, batch = self.split_context(batch)
        if start is None:
            start = self.initial_carry(shown)
        else:
            start = {k: v[:shown] for k, v in start.items()}
        length = batch["is_first"].shape[1]
        observed = length // 2
        part = {k: v[:shown] for k, v in batch.items()}
        context = {k: v[:, :observed] for k, v in part.items()}
        carry, feat = self.observe(start, context)
        prev_action = self.previous_actions(part, start)[:, observed:]
        _, imagined = self.imagine(carry, prev_action)
        recon = self.decoder(feat["deter"], feat["stoch"])
        predicted = self.decoder(imagined["deter"], imagined["stoch"])
        for key in self.encoder.image_keys:
            frames = ops.concatenate([recon[key], predicted[key]], 1)
            if len(frames.shape) == 4:
                frames = ops.expand_dims(frames, -1)
            frames = ops.clip(ops.cast(frames, "float32") * 255.0, 0.0, 255.0)
            metrics[f"frames/{key}"] = ops.cast(frames, "uint8")
        return metrics

    @property
    def overrides(self):
        """The hyperparameters given on top of the preset (a new dict).

        `WorldModel(obs_space, act_space, preset=wm.preset, **wm.overrides)`
        builds a model of the same config; `kd.Agent(world_model=wm)` adopts
        them this way.

        Examples:
            >>> import keras_dreamer as kd
            >>> wm = kd.WorldModel({"obs": (4,)}, kd.Discrete(2), preset="debug",
            ...                    deter=32)
            >>> wm.overrides, wm.config["deter"]
            ({'deter': 32}, 32)
        """
        return dict(self._overrides)

    # ------------------------------------------------------------ serialization

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "obs_space": serialize_obs_space(self.obs_spaces),
            "act_space": self.act_space.get_config(),
            "preset": self.preset,
            "seed": self.seed,
        }
        config.update(self._overrides)
        for key, value in self._extra_keras_kwargs.items():
            if key == "activity_regularizer":
                value = keras.regularizers.serialize(value)
            config[key] = value
        if "mults" in config:
            config["mults"] = list(config["mults"])
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)
