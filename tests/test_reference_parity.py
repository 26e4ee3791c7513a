"""Weight for weight with the reference DreamerV3 (danijar/dreamerv3@e3f0224).

The fixtures under `tests/data/` were produced by running the reference
itself (`benchmarks/reference_fixtures.py`, in the reference's own Python);
nothing here imports it. With the reference's weights loaded into a
`kd.Agent` through `kd.reference`'s name map, and the reference's latent and
action samples replayed (`kd.reference.onehot_noise`, `normal_noise`), every
quantity of a training step must equal the reference's.

Tolerances (float32 throughout; the reference ran on jax 0.4.33's XLA, we
run on another XLA, TensorFlow or PyTorch, so sums run in other orders):
- forward quantities (tokens, latents' log-probs, decoder, heads, loss terms,
  returns, advantages, losses): rtol 1e-4, atol 1e-5. Float32 rounding of
  sums of up to ~10^3 terms in another order moves a value by ~1e-6
  relative (measured: at most 8e-4 relative on entries near zero, ~1e-6
  absolute); every semantic slip we know of (a missing unimix, free bits
  after the mean instead of per step, a bootstrap from the slow critic)
  changes these by 1e-2 or more.
- samples (one-hot latents and actions): exactly equal.
- gradients: per parameter, within 2e-4 of that parameter's largest
  reference gradient entry (backpropagation through 8 RSSM steps and the
  two-hot heads accumulates rounding; measured: at most 2.5e-5).
- one LaProp update: the change of every parameter within 1e-3 of its
  largest reference change plus 4 float32 spacings of the parameter (the
  update is lr-sized, so the parameter's own rounding dominates); the
  optimizer's moments within 2e-4 of their largest entry (they inherit the
  gradient's per-entry error).
"""

import json
import os
import pickle
import shutil

import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer import reference
from keras_dreamer.batch import LATENT_KEYS
from tests.helpers import to_numpy
from tests.helpers import value_and_grad

DATA = os.path.join(os.path.dirname(__file__), "data")
CHECKPOINT = os.path.join(DATA, "reference_checkpoint")
FORWARD = {"rtol": 1e-4, "atol": 1e-5}


def assert_matches(quantity, ours, theirs, rtol=0.0, atol=0.0):
    """Fails naming the quantity, the worst entry and its error."""
    ours = np.asarray(to_numpy(ours), np.float64)
    theirs = np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (
        f"{quantity}: shape {ours.shape}, the reference's {theirs.shape}"
    )
    error = np.abs(ours - theirs)
    excess = error - (atol + rtol * np.abs(theirs))
    if (excess > 0).any():
        worst = np.unravel_index(np.argmax(excess), excess.shape)
        pytest.fail(
            f"{quantity}: {(excess > 0).sum()} of {error.size} entries differ "
            f"from the reference beyond rtol={rtol}, atol={atol}; worst at "
            f"{worst}: ours {ours[worst]:.8g}, reference {theirs[worst]:.8g} "
            f"(error {error[worst]:.3g})"
        )


def _nest(flat):
    tree = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


class Case:
    """A reference fixture and the agent that holds its weights."""

    @staticmethod
    def fixture(name):
        with np.load(os.path.join(DATA, f"reference_parity_{name}.npz")) as data:
            return dict(data)

    def __init__(self, name):
        self.name = name
        self.ref = Case.fixture(name)
        meta = json.loads(str(self.ref["meta"]))
        config = {"agent": _nest(meta["config"]), "jax": {"compute_dtype": "float32"}}
        self.settings = reference.translate_config(config)
        # The context case shares the discrete case's parameters.
        source = self.ref if name != "context" else Case.fixture("discrete")
        self.params = {
            k[len("param/") :]: v for k, v in source.items() if k.startswith("param/")
        }
        continuous = name == "continuous"
        self.obs_space = {"image": (16, 16, 3), "vec": kd.Box((5,))}
        self.act_space = kd.Box((2,), -1.0, 1.0) if continuous else kd.Discrete(3)
        self.agent = kd.Agent(
            self.obs_space,
            self.act_space,
            preset=None,
            dtype="float32",
            seed=0,
            **self.settings.agent,
        )
        self.agent.compile(optimizer=kd.optimizers.LaProp(**self.settings.optimizer))
        reference.load_into(self.agent, self.params)
        batch = {
            k[len("batch/") :]: v for k, v in self.ref.items() if k.startswith("batch/")
        }
        batch.pop("consec")
        batch.pop("stepid")
        # Replay context: each step's stored latent (the reference's names).
        for ours, theirs in zip(LATENT_KEYS, ("dyn/deter", "dyn/stoch")):
            if theirs in batch:
                batch[ours] = batch.pop(theirs)
        if not continuous:
            batch["action"] = np.eye(3, dtype="float32")[batch["action"]]
        self.batch = batch
        self.posterior_noise = reference.onehot_noise(self.ref["wm/stoch"])
        steps = self.ref["imag/deter"].shape[1]
        if continuous:
            self.imag_action = self.ref["imag/action"]
            action_noise = reference.normal_noise(
                self.imag_action,
                self.ref["ac/policy_mean"][:, :steps],
                self.ref["ac/policy_std"][:, :steps],
            )
        else:
            self.imag_action = np.eye(3, dtype="float32")[self.ref["imag/action"]]
            action_noise = reference.onehot_noise(self.imag_action)
        # The agent's imagination noise is time-major.
        self.imagination_noise = {
            "action": np.swapaxes(action_noise, 0, 1),
            "latent": np.swapaxes(reference.onehot_noise(self.ref["imag/stoch"]), 0, 1),
        }


@pytest.fixture(scope="module", params=["discrete", "continuous", "context"])
def case(request):
    return Case(request.param)


def require_update(case):
    if case.name == "context":
        pytest.skip(
            "the context fixture records the forward pass and the gradient; "
            "the update and acting are the other cases'"
        )


def test_every_parameter_maps_once_and_back(case):
    names = list(case.params)
    entries = reference.name_map(
        case.agent, reference.model_parameter_names(case.params)
    )
    assert len({e.ours for e in entries}) == len(entries)
    trainable = {v.path for v in case.agent.trainable_variables}
    assert trainable <= {e.ours for e in entries}
    back = reference.export(case.agent, names)
    # The slow critic's counter is the one value that is not copied (ours
    # moves the slow critic at the start of the next update, see load_into).
    assert set(back) == set(names)
    for name in names:
        if name != reference.SLOW_COUNT:
            np.testing.assert_array_equal(back[name], case.params[name], err_msg=name)


def test_encoder_rssm_decoder_and_heads(case):
    ref, wm = case.ref, case.agent.world_model
    perm = reference.token_permutation(case.agent)
    steps = wm.split_context(case.batch)[1]
    tokens = wm.encoder({k: steps[k] for k in wm.obs_spaces})
    assert_matches("encoder tokens", tokens, ref["wm/tokens"][..., perm], **FORWARD)
    out = case.agent(case.batch, noise=case.posterior_noise)
    assert_matches("posterior samples", out["stoch"], ref["wm/stoch"])
    assert_matches("deter", out["deter"], ref["wm/deter"], **FORWARD)
    assert_matches("posterior log-probs", out["post"], ref["wm/post"], **FORWARD)
    assert_matches("prior log-probs", out["prior"], ref["wm/prior"], **FORWARD)
    for key in ("image", "vec"):
        if f"wm/recon/{key}" in ref:  # the context case has them in loss/<key>
            assert_matches(
                f"decoder {key}", out["recon"][key], ref[f"wm/recon/{key}"], **FORWARD
            )
    assert_matches("reward logits", out["reward"], ref["wm/reward_logits"], **FORWARD)
    assert_matches("continue logit", out["cont"], ref["wm/cont_logit"], **FORWARD)


def test_each_rssm_step_from_the_same_carry(case):
    ref, wm = case.ref, case.agent.world_model
    rssm = wm.rssm
    start, steps = wm.split_context(case.batch)
    tokens = to_numpy(wm.encoder({k: steps[k] for k in wm.obs_spaces}))
    prev_action = to_numpy(wm.previous_actions(steps, start))
    length = tokens.shape[1]
    for t in range(0 if start is not None else 1, length):
        if t == 0:  # from the replay context's stored latent
            carry = {"deter": start["deter"], "stoch": start["stoch"]}
        else:
            carry = {
                "deter": ref["wm/deter"][:, t - 1],
                "stoch": ref["wm/stoch"][:, t - 1],
            }
        _, feat = rssm.obs_step(
            carry,
            prev_action[:, t],
            tokens[:, t],
            steps["is_first"][:, t],
            noise=case.posterior_noise[:, t],
        )
        assert_matches(
            f"observe step {t} deter", feat["deter"], ref["wm/deter"][:, t], **FORWARD
        )
        assert_matches(
            f"observe step {t} logits", feat["logit"], ref["wm/post"][:, t], **FORWARD
        )
    starts = {"deter": ref["imag/start_deter"], "stoch": ref["imag/start_stoch"]}
    steps = ref["imag/deter"].shape[1]
    carry = starts
    for h in range(steps):
        action = case.agent.actor.to_env(case.imag_action[:, h])
        _, feat = rssm.img_step(
            carry, action, noise=case.imagination_noise["latent"][h]
        )
        assert_matches(
            f"imagine step {h} deter", feat["deter"], ref["imag/deter"][:, h], **FORWARD
        )
        assert_matches(
            f"imagine step {h} logits",
            feat["logit"],
            ref["imag/prior"][:, h],
            **FORWARD,
        )
        assert_matches(
            f"imagine step {h} sample", feat["stoch"], ref["imag/stoch"][:, h]
        )
        carry = {"deter": ref["imag/deter"][:, h], "stoch": ref["imag/stoch"][:, h]}


def test_world_model_losses_per_step(case):
    ref, wm = case.ref, case.agent.world_model
    out = case.agent(case.batch, noise=case.posterior_noise)
    terms, metrics = wm.loss_terms(wm.split_context(case.batch)[1], out)
    for key in ("image", "vec", "rew", "con", "dyn", "rep"):
        assert_matches(
            f"loss/{key}", terms[f"loss/{key}"], ref[f"loss/{key}"], **FORWARD
        )
    assert_matches("dyn_ent", metrics["dyn_ent"], ref["wm/dyn_ent"], **FORWARD)
    assert_matches("rep_ent", metrics["rep_ent"], ref["wm/rep_ent"], **FORWARD)


@pytest.fixture(scope="module")
def stepped(case):
    """The actor-critic terms, the gradient and one update, in the reference's
    order: the return normaliser updates inside the loss, then LaProp, then
    the slow critic. On an agent of its own (the update changes it)."""
    case = Case(case.name)
    agent = case.agent
    out = agent(case.batch, noise=case.posterior_noise)
    terms = agent.actor_critic_terms(
        case.batch, out, update=True, noise=case.imagination_noise
    )
    terms = {k: v for k, v in terms.items() if k not in ("dist", "traj")} | {
        f"traj/{k}": v
        for k, v in agent.actor_critic_terms(
            case.batch, out, update=False, noise=case.imagination_noise
        )["traj"].items()
    }
    noise = {"posterior": case.posterior_noise, **case.imagination_noise}
    variables = agent.trainable_variables
    total, grads = value_and_grad(
        lambda: agent.loss_metrics(case.batch, update=False, noise=noise)["loss"],
        variables,
        jit=True,
    )
    grads_by_path = {v.path: to_numpy(g) for v, g in zip(variables, grads)}
    agent.critic.update_slow()  # the first call only counts (see load_into)
    agent.optimizer.apply(grads, variables)
    agent.critic.update_slow()  # the slow critic's move after the update
    after = reference.export(agent, list(case.params))
    return {"terms": terms, "total": total, "grads": grads_by_path, "after": after}


def test_imagination_returns_and_actor_critic_losses(case, stepped):
    ref, terms = case.ref, stepped["terms"]
    steps = ref["imag/deter"].shape[1]
    assert_matches(
        "imagined deter", terms["traj/deter"][:, 1:], ref["imag/deter"], **FORWARD
    )
    assert_matches("imagined latents", terms["traj/stoch"][:, 1:], ref["imag/stoch"])
    assert_matches(
        "imagined actions", terms["traj/action"], case.imag_action, **FORWARD
    )
    assert terms["traj/action"].shape[1] == steps
    pairs = {
        "reward": "ac/reward",
        "cont": "ac/cont",
        "value": "ac/value",
        "slow_value": "ac/slow_value",
        "return": "ac/return",
        "offset": "ac/retnorm_offset",
        "scale": "ac/retnorm_scale",
        "advantage": "ac/advantage",
        "logp": "ac/logp",
        "entropy": "ac/entropy",
        "policy_loss": "ac/policy_loss",
        "value_loss": "ac/value_loss",
        "replay_target": "rep/return",
        "repval_loss": "rep/loss",
    }
    for ours, theirs in pairs.items():
        assert_matches(ours, terms[ours], ref[theirs], **FORWARD)
    for bound in ("lo", "hi"):
        name = f"retnorm/{bound}/value"
        assert_matches(
            f"return normaliser {bound}",
            stepped["after"][name],
            ref[f"after/{name}"],
            **FORWARD,
        )


def test_total_loss_and_every_gradient(case, stepped):
    ref = case.ref
    assert_matches("total loss", stepped["total"], ref["loss/total"], **FORWARD)
    entries = reference.name_map(
        case.agent, reference.model_parameter_names(case.params)
    )
    checked = 0
    for entry in entries:
        if entry.ours not in stepped["grads"]:
            continue  # the slow critic and the normaliser have no gradient
        theirs = ref[f"grad/{entry.reference}"]
        ours = entry.to_reference(stepped["grads"][entry.ours])
        scale = float(np.abs(theirs).max())
        assert_matches(
            f"gradient of {entry.reference}", ours, theirs, atol=2e-4 * scale
        )
        checked += 1
    assert checked == len([k for k in ref if k.startswith("grad/")])


def test_one_laprop_update_and_the_slow_critic(case, stepped):
    require_update(case)
    ref, after = case.ref, stepped["after"]
    for key, theirs in ref.items():
        if not key.startswith("after/"):
            continue
        name = key[len("after/") :]
        if name == reference.SLOW_COUNT:
            continue
        ours, before = after[name], case.params[name]
        if name in reference.OPTIMIZER_COUNTS:
            assert int(ours) == int(theirs), name
        elif name.startswith(("opt/state/",)):
            atol = 2e-4 * np.abs(theirs).max()
            assert_matches(
                f"optimizer state {name}", ours, theirs, rtol=1e-4, atol=atol
            )
        else:
            change, expected = ours - before, theirs - before
            atol = 1e-3 * np.abs(expected).max() + 4 * np.spacing(np.abs(before))
            assert_matches(f"update of {name}", change, expected, atol=atol)


def _acting(agent, obs, ref, continuous):
    """Steps `agent.policy_step` over `obs` with the reference's samples."""
    count, steps = obs["is_first"].shape
    carry = agent.initial_policy_carry(count)
    results = {"deter": [], "stoch": [], "dist": []}
    for t in range(steps):
        step = {k: v[:, t] for k, v in obs.items()}
        if continuous:
            action_noise = reference.normal_noise(
                ref["acting/action"][:, t],
                ref["acting/policy_mean"][:, t],
                ref["acting/policy_std"][:, t],
            )
        else:
            classes = ref["acting/policy_logits"].shape[-1]
            onehot = np.eye(classes, dtype="float32")[ref["acting/action"][:, t]]
            action_noise = reference.onehot_noise(onehot)
        noise = {
            "latent": reference.onehot_noise(ref["acting/stoch"][:, t]),
            "action": action_noise,
        }
        carry, action = agent.policy_step(carry, step, mode="eval", noise=noise)
        dist = agent.actor(agent.world_model.feat_vector(carry))
        results["deter"].append(to_numpy(carry["deter"]))
        results["stoch"].append(to_numpy(carry["stoch"]))
        results["dist"].append({k: to_numpy(v) for k, v in dist.items()})
        results.setdefault("action", []).append(to_numpy(action))
    return results


def _assert_acting(name, results, ref, continuous):
    for t in range(len(results["deter"])):
        assert_matches(
            f"{name} step {t} deter",
            results["deter"][t],
            ref["acting/deter"][:, t],
            **FORWARD,
        )
        assert_matches(
            f"{name} step {t} latent", results["stoch"][t], ref["acting/stoch"][:, t]
        )
        dist = results["dist"][t]
        if continuous:
            assert_matches(
                f"{name} step {t} mean",
                dist["mean"],
                ref["acting/policy_mean"][:, t],
                **FORWARD,
            )
            assert_matches(
                f"{name} step {t} std",
                dist["std"],
                ref["acting/policy_std"][:, t],
                **FORWARD,
            )
        else:
            # Logits up to a constant: the reference's are unnormalised.
            ours = dist["logits"] - dist["logits"].max(-1, keepdims=True)
            theirs = ref["acting/policy_logits"][:, t]
            theirs = theirs - theirs.max(-1, keepdims=True)
            assert_matches(f"{name} step {t} policy logits", ours, theirs, **FORWARD)


def test_policy_acts_as_the_reference(case):
    require_update(case)
    continuous = isinstance(case.act_space, kd.Box)
    obs = {
        k[len("acting/obs/") :]: v
        for k, v in case.ref.items()
        if k.startswith("acting/obs/")
    }
    results = _acting(case.agent, obs, case.ref, continuous)
    _assert_acting("acting", results, case.ref, continuous)


# ------------------------------------------------- the reference's checkpoint


def test_reference_checkpoint_imports_and_acts():
    agent = kd.Agent.from_reference(CHECKPOINT)
    assert agent.act_space == kd.Discrete(17)  # Crafter's actions
    assert agent.world_model.obs_spaces == {
        "image": kd.Box((64, 64, 3), 0, 255, "uint8")
    }
    assert agent.world_model.config["deter"] == 64
    assert agent.agent_config["imag_length"] == 4
    checkpoint = reference.read_checkpoint(CHECKPOINT)
    assert int(agent.optimizer.iterations.numpy()) == int(
        checkpoint.params["opt/step/value"]
    )
    with np.load(os.path.join(DATA, "reference_checkpoint_acting.npz")) as data:
        ref = dict(data)
    obs = {
        k[len("acting/obs/") :]: v
        for k, v in ref.items()
        if k.startswith("acting/obs/")
    }
    _assert_acting("checkpoint policy", _acting(agent, obs, ref, False), ref, False)


def _copy_checkpoint(tmp_path):
    target = tmp_path / "run"
    shutil.copytree(CHECKPOINT, target)
    latest = (target / "ckpt" / "latest").read_text().strip()
    return target, target / "ckpt" / latest


def test_checkpoint_errors_name_the_file_and_key(tmp_path):
    run, folder = _copy_checkpoint(tmp_path)
    (run / "config.yaml").rename(run / "config.yml")
    with pytest.raises(
        reference.ReferenceCheckpointError, match="config.yaml: missing"
    ):
        reference.read_checkpoint(run)
    (run / "config.yml").rename(run / "config.yaml")

    pickled = (folder / "agent.pkl").read_bytes()
    (folder / "agent.pkl").write_bytes(pickled[: len(pickled) // 2])
    with pytest.raises(
        reference.ReferenceCheckpointError, match="agent.pkl: cannot read"
    ):
        reference.read_checkpoint(run)

    saved = reference.load_pickle(
        os.path.join(CHECKPOINT, "ckpt", folder.name, "agent.pkl")
    )
    saved["params"]["dyn/dyngru/kernel"] = saved["params"]["dyn/dyngru/kernel"][:, :-1]
    (folder / "agent.pkl").write_bytes(pickle.dumps(saved, protocol=4))
    with pytest.raises(
        reference.ReferenceCheckpointError,
        match=r"agent.pkl: dyn/dyngru/kernel has shape",
    ):
        kd.Agent.from_reference(run)
    saved["params"]["dyn/extra/kernel"] = saved["params"].pop("dyn/dyngru/kernel")
    (folder / "agent.pkl").write_bytes(pickle.dumps(saved, protocol=4))
    with pytest.raises(reference.ReferenceCheckpointError, match="dyn/extra/kernel"):
        kd.Agent.from_reference(run)

    (folder / "done").unlink()
    with pytest.raises(
        reference.ReferenceCheckpointError, match="incomplete checkpoint"
    ):
        reference.read_checkpoint(run)
    with pytest.raises(reference.ReferenceCheckpointError, match="no such directory"):
        reference.read_checkpoint(tmp_path / "nowhere")


def test_unsupported_config_keys_are_named(tmp_path):
    config = reference.read_yaml(os.path.join(CHECKPOINT, "config.yaml"))
    config["agent"]["dyn"]["rssm"]["norm"] = "layer"
    config["agent"]["imag_loss"]["slowtar"] = True
    config["agent"]["newthing"] = 3
    with pytest.raises(reference.ReferenceCheckpointError) as error:
        reference.translate_config(config)
    message = str(error.value)
    assert "agent.dyn.rssm.norm: 'layer' is not supported" in message
    assert "agent.imag_loss.slowtar: True is not supported" in message
    assert "agent.newthing: unknown to keras-dreamer" in message


def test_a_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "agent.pkl"
    path.write_bytes(pickle.dumps({"params": {"x": os.getcwd}}, protocol=4))
    with pytest.raises(reference.ReferenceCheckpointError, match="refusing to load"):
        reference.load_pickle(path)


def test_import_reference_command_writes_a_loadable_agent(tmp_path, capsys):
    import keras

    from keras_dreamer import cli

    out = tmp_path / "crafter.keras"
    assert cli.main(["import-reference", CHECKPOINT, "--out", str(out)]) == 0
    assert "Discrete(17)" in capsys.readouterr().out
    loaded = keras.saving.load_model(out)
    checkpoint = reference.read_checkpoint(CHECKPOINT)
    exported = reference.export(loaded, list(checkpoint.params))
    for name, value in checkpoint.params.items():
        if name != reference.SLOW_COUNT:
            np.testing.assert_array_equal(exported[name], value, err_msg=name)
    assert cli.main(["import-reference", str(tmp_path), "--out", str(out)]) == 2
    assert "not a reference run" in capsys.readouterr().err
