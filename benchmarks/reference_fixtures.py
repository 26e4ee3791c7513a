"""Parity fixtures made by running the reference DreamerV3 (run with ITS Python).

This script runs inside the reference's own virtual environment (danijar/
dreamerv3 at commit e3f0224, jax 0.4.33, numpy < 2); keras-dreamer never
imports the reference. It writes small `.npz` files under `tests/data/`
that `tests/test_reference_parity.py` reads on every backend:

- `reference_parity_<case>.npz` (cases `discrete`, `continuous`): a tiny
  agent that keeps the reference's structure (a 16x16x3 image key and a
  5-float vector key, 2 CNN stages, an RSSM of 4 blocks, 255 two-hot bins),
  its parameters perturbed so that no head is zero, a fixed batch, and every
  intermediate of one training step, recorded from the reference's own
  modules while they run: encoder tokens, posterior and prior log-probs and
  samples, decoder outputs, reward and continue heads, every loss term per
  (b, t), imagination (states, latent and action samples), lambda-returns,
  return-normaliser state, advantages, policy log-probs and entropies, the
  critic and replay-value losses, the gradient of the total loss for every
  parameter, and the state after one update (parameters, LaProp moments,
  slow critic, normaliser). Also six acting steps of the policy.
- `reference_checkpoint/`: a checkpoint written by the reference's own
  training script (`dreamerv3/main.py`, a tiny Crafter agent), plus
  `reference_checkpoint_acting.npz`: that checkpoint's policy on a fixed
  observation sequence.

Usage (see `docs/reference.md`):

    git clone https://github.com/danijar/dreamerv3 /tmp/dreamerv3
    git -C /tmp/dreamerv3 checkout e3f0224
    python3.11 -m venv /tmp/refenv && /tmp/refenv/bin/pip install \\
        "jax==0.4.33" "numpy<2" chex einops jaxtyping ninjax optax elements \\
        granular portal scope ruamel.yaml crafter
    JAX_PLATFORMS=cpu /tmp/refenv/bin/python benchmarks/reference_fixtures.py \\
        --reference-src /tmp/dreamerv3 --out tests/data
"""

import argparse
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import tempfile

import numpy as np

# The tiny agent of the parity cases, as overrides of the reference's config.
PARITY_CONFIG = {
    "agent.dyn.rssm.deter": 32,
    "agent.dyn.rssm.hidden": 16,
    "agent.dyn.rssm.stoch": 4,
    "agent.dyn.rssm.classes": 5,
    "agent.dyn.rssm.blocks": 4,
    "agent.enc.simple.depth": 4,
    "agent.enc.simple.mults": [2, 3],
    "agent.enc.simple.layers": 2,
    "agent.enc.simple.units": 8,
    "agent.dec.simple.depth": 4,
    "agent.dec.simple.mults": [2, 3],
    "agent.dec.simple.layers": 2,
    "agent.dec.simple.units": 8,
    "agent.dec.simple.bspace": 4,
    "agent.rewhead.units": 8,
    "agent.conhead.units": 8,
    "agent.policy.units": 8,
    "agent.policy.layers": 2,
    "agent.value.units": 8,
    "agent.value.layers": 2,
    "agent.imag_length": 5,
}
CASES = {
    # A larger learning rate without warm-up makes the one update visible.
    "discrete": {"agent.opt.lr": 1e-3, "agent.opt.warmup": 0},
    # The reference's learning rate and warm-up (the ramp's 6th step).
    "continuous": {},
    # Replay context: one leading step whose stored latent is the carry.
    "context": {"replay_context": 1, "agent.opt.lr": 1e-3, "agent.opt.warmup": 0},
}
# The context case checks what the context changes (the forward pass, the
# losses, the gradient); the update and acting are the other cases'. Its
# parameters are the discrete case's (same seed and shapes): not stored again.
LIGHT_CASES = ("context",)
PARAMS_FROM = {"context": "discrete"}
BATCH, LENGTH, ACT_STEPS, OPT_COUNT = 3, 8, 6, 5

# A tiny Crafter agent trained by the reference's own script.
CHECKPOINT_FLAGS = [
    "--configs",
    "crafter",
    "debug",
    "--task",
    "crafter_reward",
    "--jax.platform",
    "cpu",
    "--jax.compute_dtype",
    "float32",
    "--jax.prealloc",
    "False",
    "--jax.debug",
    "False",
    "--logger.outputs",
    "jsonl",
    "--run.steps",
    "240",
    "--run.envs",
    "1",
    "--run.eval_envs",
    "1",
    "--run.save_every",
    "5",
    "--run.log_every",
    "60",
    "--run.report_every",
    "1e9",
    "--run.train_ratio",
    "16",
    "--run.debug",
    "False",
    "--batch_size",
    "2",
    "--batch_length",
    "8",
    "--report_length",
    "4",
    "--agent.dyn.rssm.deter",
    "64",
    "--agent.dyn.rssm.hidden",
    "16",
    "--agent.dyn.rssm.stoch",
    "4",
    "--agent.dyn.rssm.classes",
    "4",
    "--agent.dyn.rssm.blocks",
    "4",
    "--agent.enc.simple.depth",
    "4",
    "--agent.enc.simple.mults",
    "2,2,2,2",
    "--agent.dec.simple.depth",
    "4",
    "--agent.dec.simple.mults",
    "2,2,2,2",
    "--agent.dec.simple.bspace",
    "4",
    "--agent.rewhead.bins",
    "31",
    "--agent.value.bins",
    "31",
    "--agent.imag_length",
    "4",
]


class Recorder:
    """Collects concrete arrays that the reference's modules compute."""

    def __init__(self):
        self.values = {}
        self.pending = set()
        self.active = False

    def add(self, name, value):
        import jax

        if not self.active:
            return
        leaves = jax.tree_util.tree_leaves(value)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            # Under the gradient the primal values arrive by callback. ninjax
            # runs the function once before differentiating it: the values
            # of the last run (the differentiated one) are kept.
            self.pending.add(name)
            jax.debug.callback(lambda x: self._store(name, x), value)
        else:
            self._store(name, value)

    def _store(self, name, value):
        self.values[name] = np.asarray(value)

    def take(self):
        import jax

        jax.effects_barrier()
        missing = self.pending - set(self.values)
        if missing:
            raise RuntimeError(f"never recorded: {sorted(missing)}")
        values, self.values, self.pending = self.values, {}, set()
        return values


RECORD = Recorder()


def _instrument(src):
    """Wraps the reference's modules so that they record what they compute."""
    sys.path.insert(0, src)
    import embodied.jax
    from dreamerv3 import agent as agent_module
    from dreamerv3 import rssm

    def mixed(dist):  # the unimixed log-probs of an Agg(OneHot) latent
        return dist.output.dist.logits

    loss = rssm.RSSM.loss

    def rssm_loss(self, carry, tokens, acts, reset, training):
        out = loss(self, carry, tokens, acts, reset, training)
        _, entries, losses, feat, metrics = out
        RECORD.add("wm/tokens", tokens)
        RECORD.add("wm/deter", feat["deter"])
        RECORD.add("wm/stoch", feat["stoch"])
        RECORD.add("wm/post", mixed(self._dist(feat["logit"])))
        RECORD.add("wm/prior", mixed(self._dist(self._prior(feat["deter"]))))
        RECORD.add("wm/dyn_ent", metrics["dyn_ent"])
        RECORD.add("wm/rep_ent", metrics["rep_ent"])
        return out

    imagine = rssm.RSSM.imagine

    def rssm_imagine(self, carry, policy, length, training, single=False):
        out = imagine(self, carry, policy, length, training, single)
        if not single and callable(policy):
            _, feat, action = out
            RECORD.add("imag/start_deter", carry["deter"])
            RECORD.add("imag/start_stoch", carry["stoch"])
            RECORD.add("imag/deter", feat["deter"])
            RECORD.add("imag/stoch", feat["stoch"])
            RECORD.add("imag/prior", mixed(self._dist(feat["logit"])))
            RECORD.add("imag/action", action["action"])
        return out

    observe = rssm.RSSM.observe

    def rssm_observe(self, carry, tokens, action, reset, training, single=False):
        out = observe(self, carry, tokens, action, reset, training, single)
        if single:
            _, _, feat = out
            RECORD.add("act/deter", feat["deter"])
            RECORD.add("act/stoch", feat["stoch"])
            RECORD.add("act/post", mixed(self._dist(feat["logit"])))
        return out

    decode = rssm.Decoder.__call__

    def decoder_call(self, carry, feat, reset, training, single=False):
        out = decode(self, carry, feat, reset, training, single)
        if training:
            for key, recon in out[2].items():
                RECORD.add(f"wm/recon/{key}", recon.pred())
        return out

    head = embodied.jax.MLPHead.__call__

    def head_call(self, x, bdims):
        out = head(self, x, bdims)
        # The reward and continue heads on the replayed posterior features
        # (batch-shaped; their other calls are on imagined trajectories).
        if self.name in ("rew", "con") and x.shape[:2] == (BATCH, LENGTH):
            if self.name == "rew":
                RECORD.add("wm/reward_logits", out.logits)
            else:
                RECORD.add("wm/cont_logit", out.logit)
        return out

    imag_loss = agent_module.imag_loss

    def imag_loss_wrapper(act, rew, con, policy, value, slowvalue, *args, **kw):
        losses, outs, metrics = imag_loss(
            act, rew, con, policy, value, slowvalue, *args, **kw
        )
        dist = policy["action"]
        if hasattr(dist, "logits"):
            RECORD.add("ac/policy_logits", dist.logits)
        else:
            RECORD.add("ac/policy_mean", dist.output.mean)
            RECORD.add("ac/policy_std", dist.output.stddev)
        RECORD.add("ac/action", act["action"])
        RECORD.add("ac/logp", dist.logp(act["action"])[:, :-1])
        RECORD.add("ac/entropy", dist.entropy()[:, :-1])
        RECORD.add("ac/reward", rew)
        RECORD.add("ac/cont", con)
        RECORD.add("ac/value", value.pred())
        RECORD.add("ac/slow_value", slowvalue.pred())
        RECORD.add("ac/return", outs["ret"])
        RECORD.add("ac/policy_loss", losses["policy"])
        RECORD.add("ac/value_loss", losses["value"])
        for key in ("ret", "ret_min", "ret_max", "adv", "adv_std", "adv_mag"):
            RECORD.add(f"ac/metric/{key}", metrics[key])
        return losses, outs, metrics

    repl_loss = agent_module.repl_loss

    def repl_loss_wrapper(last, term, rew, boot, value, slowvalue, *args, **kw):
        losses, outs, metrics = repl_loss(
            last, term, rew, boot, value, slowvalue, *args, **kw
        )
        RECORD.add("rep/boot", boot)
        RECORD.add("rep/return", outs["ret"])
        RECORD.add("rep/slow_value", slowvalue.pred())
        RECORD.add("rep/loss", losses["repval"])
        return losses, outs, metrics

    normalize = embodied.jax.Normalize.__call__

    def normalize_call(self, x, update):
        out = normalize(self, x, update)
        if self.name == "retnorm":
            RECORD.add("ac/retnorm_offset", out[0])
            RECORD.add("ac/retnorm_scale", out[1])
        if self.name == "advnorm":
            RECORD.add("ac/advantage", x)
        return out

    rssm.RSSM.loss = rssm_loss
    rssm.RSSM.imagine = rssm_imagine
    rssm.RSSM.observe = rssm_observe
    rssm.Decoder.__call__ = decoder_call
    embodied.jax.MLPHead.__call__ = head_call
    agent_module.imag_loss = imag_loss_wrapper
    agent_module.repl_loss = repl_loss_wrapper
    embodied.jax.Normalize.__call__ = normalize_call


def _config(src, overrides):
    import elements
    import ruamel.yaml as yaml

    configs = yaml.YAML(typ="safe").load(
        pathlib.Path(src, "dreamerv3", "configs.yaml").read_text()
    )
    full = elements.Config(configs["defaults"])
    full = full.update(
        {
            "jax.platform": "cpu",
            "jax.compute_dtype": "float32",
            "jax.prealloc": False,
            "replay_context": 0,
            **PARITY_CONFIG,
            **overrides,
        }
    )
    return full


def _agent(src, full, continuous):
    import elements
    from dreamerv3.agent import Agent

    config = elements.Config(
        **full.agent,
        logdir=tempfile.mkdtemp(),
        seed=0,
        jax=full.jax,
        batch_size=BATCH,
        batch_length=LENGTH,
        replay_context=full.replay_context,
        report_length=4,
        replica=0,
        replicas=1,
    )
    obs_space = {
        "image": elements.Space(np.uint8, (16, 16, 3)),
        "vec": elements.Space(np.float32, (5,)),
        "reward": elements.Space(np.float32),
        "is_first": elements.Space(bool),
        "is_last": elements.Space(bool),
        "is_terminal": elements.Space(bool),
    }
    if continuous:
        act_space = {"action": elements.Space(np.float32, (2,), -1.0, 1.0)}
    else:
        act_space = {"action": elements.Space(np.int32, (), 0, 3)}
    agent = Agent(obs_space, act_space, config)
    _allow_transfers()
    return agent


def _allow_transfers():
    # The reference forbids implicit host-device copies for its own loop;
    # this script runs the modules eagerly on host arrays.
    import jax

    jax.config.update("jax_transfer_guard", "allow")


def _perturbed(params, rng):
    """Random weights everywhere (no zero head), a used optimizer state."""
    out = {}
    for name, value in params.items():
        value = np.asarray(value)
        # The moments: one value per tensor (non-zero, so their decay counts,
        # and the fixture stays small).
        if name.startswith("opt/state/1/1/"):  # second moments: positive
            fill = abs(rng.normal()) * 1e-4
            out[name] = np.full(value.shape, fill, "f4")
        elif name.startswith("opt/state/2/1/"):  # momentum
            out[name] = np.full(value.shape, rng.normal() * 1e-3, "f4")
        elif value.dtype.kind == "i":  # step counters
            out[name] = np.asarray(OPT_COUNT, value.dtype)
        elif name == "retnorm/lo/value":
            out[name] = np.float32(-0.3)
        elif name == "retnorm/hi/value":
            out[name] = np.float32(1.8)
        elif name.startswith("slowval/"):
            continue  # from the critic below
        elif name.endswith("/scale"):
            out[name] = (1.0 + 0.2 * rng.normal(size=value.shape)).astype("f4")
        elif name in ("rew/head/logits/bias", "val/head/logits/bias"):
            # Peaked at the zero bin, so predictions are moderate numbers (a
            # flat distribution over symexp bins averages to millions).
            centre = np.abs(np.arange(value.shape[0]) - value.shape[0] // 2)
            noise = 0.2 * rng.normal(size=value.shape)
            out[name] = (-0.3 * centre + noise).astype("f4")
        elif name.endswith("/bias"):
            out[name] = (0.2 * rng.normal(size=value.shape)).astype("f4")
        else:
            fan_in = int(np.prod(value.shape[:-1]))
            if value.ndim == 3:  # block-linear: the fan-in of one block
                fan_in = value.shape[1]
            std = 1.0 / np.sqrt(fan_in)
            out[name] = (std * rng.normal(size=value.shape)).astype("f4")
    for name in params:
        if name.startswith("slowval/"):
            source = out["val/" + name[len("slowval/") :]]
            noise = 0.1 * np.std(source) * rng.normal(size=source.shape)
            out[name] = (source + noise).astype("f4")
    return out


def _batch(rng, continuous, context=0):
    B, T = BATCH, LENGTH + context
    batch = {
        "image": rng.integers(0, 256, (B, T, 16, 16, 3), dtype=np.uint8),
        "vec": (3.0 * rng.normal(size=(B, T, 5))).astype("f4"),
        "reward": (2.0 * rng.normal(size=(B, T))).astype("f4"),
        "is_first": np.zeros((B, T), bool),
        "is_last": np.zeros((B, T), bool),
        "is_terminal": np.zeros((B, T), bool),
        "consec": np.zeros((B, T), np.int32),
        "stepid": rng.integers(0, 255, (B, T, 20), dtype=np.uint8),
    }
    batch["reward"][0, 2] = 40.0  # a reward far out in the symexp bins
    batch["is_first"][:, 0] = True
    # Sequence 1 ends (terminal) at t=3, a new episode starts at t=4;
    # sequence 2 is cut (not terminal) at t=5.
    batch["is_last"][1, 3] = batch["is_terminal"][1, 3] = True
    batch["is_first"][1, 4] = True
    batch["is_last"][2, 5] = True
    batch["is_first"][2, 6] = True
    if continuous:  # some beyond [-1, 1]: the RSSM scales them down
        batch["action"] = rng.uniform(-1.5, 1.5, (B, T, 2)).astype("f4")
    else:
        batch["action"] = rng.integers(0, 3, (B, T)).astype(np.int32)
    if context:
        # Each step's stored posterior latent, as the replay would hold it;
        # the first is the carry. Sequence 0 starts an episode after the
        # context step (its carry is then reset), the others continue one.
        deter, stoch, classes = 32, 4, 5
        batch["dyn/deter"] = np.tanh(rng.normal(size=(B, T, deter))).astype("f4")
        index = rng.integers(0, classes, (B, T, stoch))
        batch["dyn/stoch"] = np.eye(classes, dtype="f4")[index]
        batch["is_first"][:, :2] = False
        batch["is_first"][0, 1] = True
        batch["is_first"][:, 0] = True
    return batch


def parity_case(src, case, out_dir):
    import jax.numpy as jnp
    import ninjax as nj

    continuous = case == "continuous"
    full = _config(src, CASES[case])
    outer = _agent(src, full, continuous)
    model = outer.model
    rng = np.random.default_rng(1 if continuous else 0)
    params = _perturbed(outer.params, rng)
    state = {k: jnp.asarray(v) for k, v in params.items()}
    context = int(full.replay_context)
    batch = _batch(rng, continuous, context)
    data = {k: jnp.asarray(v) for k, v in batch.items()}
    seed = jnp.array([7, 7], jnp.uint32)

    def loss(*, training):
        carry = model.init_train(BATCH)
        carry, obs, prevact, _ = model._apply_replay_context(carry, data)
        return model.loss(carry, obs, prevact, training=training)

    # 1. The gradient of the total loss, while the modules record every
    # intermediate (the train step below draws the same samples).
    def grads_fn():
        def lossfn():
            return loss(training=True)

        total, _, grads, aux = nj.grad(lossfn, model.modules, has_aux=True)()
        return total, grads, aux

    RECORD.active = True
    _, (total, grads, (_, _, outs, _)) = nj.pure(grads_fn)(dict(state), seed=seed)
    RECORD.active = False
    values = RECORD.take()
    values["loss/total"] = np.asarray(total)
    for key, value in outs["losses"].items():
        values[f"loss/{key}"] = np.asarray(value)
    for name, grad in grads.items():
        values[f"grad/{name}"] = np.asarray(grad)

    # 3. One training step: the update, the optimizer state, the slow critic.
    def train():
        carry = model.init_train(BATCH)
        return model.train(carry, data)

    new_state, (_, outs, train_metrics) = nj.pure(train)(dict(state), seed=seed)
    np.testing.assert_allclose(
        train_metrics["opt/loss"], values["loss/total"], rtol=1e-6
    )
    if context:  # the fresh posteriors the reference writes back to its replay
        np.testing.assert_allclose(outs["replay"]["dyn/deter"], values["wm/deter"])
    if case in LIGHT_CASES:
        for name in ("retnorm/lo/value", "retnorm/hi/value"):
            values[f"after/{name}"] = np.asarray(new_state[name])
        # The decoder's images are the other cases' (and in loss/image here).
        values = {k: v for k, v in values.items() if not k.startswith("wm/recon/")}
        source = pathlib.Path(out_dir, f"reference_parity_{PARAMS_FROM[case]}.npz")
        with np.load(source) as shared:
            for key, value in params.items():
                np.testing.assert_array_equal(shared[f"param/{key}"], value)
        return _save(case, full, values, {}, batch, {}, out_dir)
    for name, value in new_state.items():
        values[f"after/{name}"] = np.asarray(value)

    # 4. Acting: the eval policy over a short observation sequence.
    acting = {
        "image": rng.integers(0, 256, (2, ACT_STEPS, 16, 16, 3), dtype=np.uint8),
        "vec": (3.0 * rng.normal(size=(2, ACT_STEPS, 5))).astype("f4"),
        "is_first": np.zeros((2, ACT_STEPS), bool),
    }
    acting["is_first"][:, 0] = True
    acting["is_first"][1, 3] = True
    values.update(_acting(model, state, acting))
    _save(case, full, values, params, batch, acting, out_dir)


def _save(case, full, values, params, batch, acting, out_dir):
    import jax

    for key, value in params.items():
        values[f"param/{key}"] = value
    for key, value in batch.items():
        values[f"batch/{key}"] = value
    for key, value in acting.items():
        values[f"acting/obs/{key}"] = value
    meta = {
        "case": case,
        "config": {k: _plain(v) for k, v in full.agent.flat.items()},
        "batch": [BATCH, LENGTH],
        "reference": "danijar/dreamerv3@e3f0224",
        "jax": jax.__version__,
    }
    values["meta"] = np.asarray(json.dumps(meta))
    path = pathlib.Path(out_dir, f"reference_parity_{case}.npz")
    np.savez_compressed(path, **values)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {len(values)} arrays)")


def _acting(model, state, acting):
    """The policy step by step on `acting` observations; what it computed."""
    import jax
    import jax.numpy as jnp
    import ninjax as nj

    batch = acting["is_first"].shape[0]
    steps = acting["is_first"].shape[1]
    _, carry = nj.pure(model.init_policy)(dict(state), batch, seed=0)
    recorded = {}
    for t in range(steps):
        obs = {k: jnp.asarray(v[:, t]) for k, v in acting.items()}
        obs["reward"] = jnp.zeros((batch,), jnp.float32)
        obs["is_last"] = obs["is_terminal"] = jnp.zeros((batch,), bool)
        RECORD.active = True

        def step(carry, obs):
            carry, act, _ = model.policy(carry, obs, mode="eval")
            feat = model.feat2tensor(
                dict(deter=carry[1]["deter"], stoch=carry[1]["stoch"])
            )
            dist = model.pol(feat, bdims=1)["action"]
            return carry, act, dist

        _, (carry, act, dist) = nj.pure(step)(dict(state), carry, obs, seed=100 + t)
        RECORD.active = False
        step_values = RECORD.take()
        if hasattr(dist, "logits"):
            step_values["act/policy_logits"] = np.asarray(dist.logits)
        else:
            step_values["act/policy_mean"] = np.asarray(dist.output.mean)
            step_values["act/policy_std"] = np.asarray(dist.output.stddev)
        step_values["act/action"] = np.asarray(act["action"])
        for key, value in step_values.items():
            recorded.setdefault(f"acting/{key[4:]}", []).append(value)
        jax.block_until_ready(carry)
    return {k: np.stack(v, 1) for k, v in recorded.items()}


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def checkpoint(src, out_dir):
    """Trains a tiny Crafter agent with the reference's script; its policy."""
    import jax.numpy as jnp

    logdir = pathlib.Path(tempfile.mkdtemp(), "run")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": src}
    command = [sys.executable, str(pathlib.Path(src, "dreamerv3", "main.py"))]
    command += ["--logdir", str(logdir), *CHECKPOINT_FLAGS]
    subprocess.run(command, env=env, check=True, cwd=src)
    latest = (logdir / "ckpt" / "latest").read_text().strip()
    target = pathlib.Path(out_dir, "reference_checkpoint")
    shutil.rmtree(target, ignore_errors=True)
    (target / "ckpt" / latest).mkdir(parents=True)
    shutil.copy(logdir / "config.yaml", target / "config.yaml")
    (target / "ckpt" / "latest").write_text(latest)
    for name in ("agent.pkl", "step.pkl", "done"):
        shutil.copy(logdir / "ckpt" / latest / name, target / "ckpt" / latest / name)
    print(f"wrote {target} (checkpoint {latest})")

    # The checkpoint's policy on fixed observations, by the reference's agent.
    import elements
    import ruamel.yaml as yaml

    sys.argv = [sys.argv[0]]
    from dreamerv3 import main as main_module

    config = elements.Config(
        yaml.YAML(typ="safe").load((target / "config.yaml").read_text())
    )
    config = config.update({"logdir": tempfile.mkdtemp()})
    outer = main_module.make_agent(config)
    _allow_transfers()
    with open(target / "ckpt" / latest / "agent.pkl", "rb") as file:
        saved = pickle.load(file)
    state = {k: jnp.asarray(v) for k, v in saved["params"].items()}
    rng = np.random.default_rng(3)
    acting = {
        "image": rng.integers(0, 256, (2, ACT_STEPS, 64, 64, 3), dtype=np.uint8),
        "is_first": np.zeros((2, ACT_STEPS), bool),
    }
    acting["is_first"][:, 0] = True
    acting["is_first"][1, 3] = True
    values = _acting(outer.model, state, acting)
    for key, value in acting.items():
        values[f"acting/obs/{key}"] = value
    path = pathlib.Path(out_dir, "reference_checkpoint_acting.npz")
    np.savez_compressed(path, **values)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-src", required=True)
    parser.add_argument("--out", default="tests/data")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[*CASES, "checkpoint"],
        choices=[*CASES, "checkpoint"],
    )
    args = parser.parse_args()
    _instrument(args.reference_src)
    os.makedirs(args.out, exist_ok=True)
    for case in args.only:
        if case == "checkpoint":
            checkpoint(args.reference_src, args.out)
        else:
            parity_case(args.reference_src, case, args.out)


if __name__ == "__main__":
    main()
