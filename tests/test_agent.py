"""The agent's layers and losses against numpy re-implementations of the
formulas in the reference doc (shared/reference/dreamerv3_agent.md)."""

import keras
import numpy as np
import pytest

import keras_dreamer as kd
from tests.helpers import SMALL_IMAGE
from tests.helpers import random_batch
from tests.helpers import to_numpy
from tests.helpers import value_and_grad

SMALL_AGENT = {"preset": "debug", "mults": (4, 4)}


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_bins(num):
    half = np.linspace(-20.0, 0.0, (num + 1) // 2)
    half = np.sign(half) * np.expm1(np.abs(half))
    return np.concatenate([half, -half[:-1][::-1]])


def np_twohot_ce(logits, target, bins):
    """Cross-entropy of softmax(logits) against the raw-space two-hot target."""
    target = np.clip(target, bins[0], bins[-1])
    above = np.clip(np.searchsorted(bins, target, side="right"), 1, len(bins) - 1)
    below = above - 1
    lo, hi = bins[below], bins[above]
    w_hi = np.where(hi > lo, (target - lo) / np.where(hi > lo, hi - lo, 1), 0.0)
    code = np.zeros(target.shape + (len(bins),))
    np.put_along_axis(code, below[..., None], (1 - w_hi)[..., None], -1)
    np.put_along_axis(code, above[..., None], w_hi[..., None], -1)
    return -(code * np_log_softmax(logits)).sum(-1)


def np_lambda_return(reward, cont, value, lam):
    """R_H = v_H; R_i = r_{i+1} + c_{i+1} ((1 - lam) v_{i+1} + lam R_{i+1})."""
    out = np.zeros_like(value)
    out[:, -1] = value[:, -1]
    for i in range(value.shape[1] - 2, -1, -1):
        out[:, i] = reward[:, i + 1] + cont[:, i + 1] * (
            (1 - lam) * value[:, i + 1] + lam * out[:, i + 1]
        )
    return out[:, :-1]


def np_replay_return(reward, last, term, boot, gamma, lam):
    out = np.zeros_like(boot)
    out[:, -1] = boot[:, -1]
    for t in range(boot.shape[1] - 2, -1, -1):
        live = 1 - last[:, t + 1]
        out[:, t] = reward[:, t + 1] + gamma * (1 - term[:, t + 1]) * (
            (1 - lam * live) * boot[:, t + 1] + lam * live * out[:, t + 1]
        )
    return out[:, :-1]


@pytest.fixture(scope="module")
def agent():
    keras.utils.set_random_seed(1)
    agent = kd.Agent({"image": SMALL_IMAGE}, kd.Discrete(3), **SMALL_AGENT)
    agent.compile()
    return agent


# ---------------------------------------------------------------- layers


@pytest.mark.parametrize(
    "space", [kd.Discrete(4), kd.Box((2,), -1.0, 1.0), kd.Box((3,), 0.0, 2.0)]
)
def test_actor_shapes_config_and_distribution(space):
    actor = kd.layers.Actor(space, units=8, layers=2, name="actor")
    feat = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    dist = to_numpy(actor(feat))
    noise = np.asarray(keras.ops.convert_to_numpy(actor.draw_noise((5,), seed=0)))
    action = np.asarray(keras.ops.convert_to_numpy(actor.sample(dist, noise)))
    assert action.shape == (5, space.width)
    logp = np.asarray(keras.ops.convert_to_numpy(actor.log_prob(dist, action)))
    ent = np.asarray(keras.ops.convert_to_numpy(actor.entropy(dist)))
    if space.discrete:
        assert set(np.unique(action)) <= {0.0, 1.0} and np.all(action.sum(-1) == 1)
        logq = np_log_softmax(dist["logits"].astype(np.float64))
        np.testing.assert_allclose(logp, (action * logq).sum(-1), rtol=1e-5)
        np.testing.assert_allclose(ent, -(np.exp(logq) * logq).sum(-1), rtol=1e-5)
    else:
        mean, std = dist["mean"], dist["std"]
        assert np.all((std > 0.1) & (std < 1.0)) and np.all(np.abs(mean) < 1)
        np.testing.assert_allclose(action, mean + std * noise, rtol=1e-5)
        gauss = -0.5 * ((action - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi))
        np.testing.assert_allclose(logp, gauss.sum(-1), rtol=1e-5)
        np.testing.assert_allclose(
            ent, (np.log(std) + 0.5 * np.log(2 * np.pi * np.e)).sum(-1), rtol=1e-5
        )
        env_action = np.asarray(keras.ops.convert_to_numpy(actor.to_env(action)))
        assert np.all(env_action >= space.low) and np.all(env_action <= space.high)
    clone = kd.layers.Actor.from_config(actor.get_config())
    assert clone.act_space == space and clone.get_config() == actor.get_config()


def test_actor_unimix_is_an_option():
    feat = np.ones((1, 6), "float32")
    plain = kd.layers.Actor(kd.Discrete(3), units=8, layers=1, outscale=100.0)
    logits = to_numpy(plain(feat))["logits"]
    mixed = kd.layers.Actor(kd.Discrete(3), units=8, layers=1, unimix=0.5)
    mixed.build((None, 6))
    mixed.set_weights(plain.get_weights())
    probs = np.exp(to_numpy(mixed(feat))["logits"])
    expected = 0.5 * np.exp(np_log_softmax(logits.astype(np.float64))) + 0.5 / 3
    np.testing.assert_allclose(probs, expected, rtol=1e-5)


def test_actor_rejects_unbounded_box():
    with pytest.raises(ValueError, match="finite bounds"):
        kd.layers.Actor(kd.Box((2,)), units=8)


def test_critic_starts_at_zero_and_slow_copy_follows_the_reference_ema():
    critic = kd.layers.Critic(units=8, layers=1, bins=5, slow_rate=0.25, slow_every=2)
    critic.build((None, 6))
    feat = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    assert np.all(to_numpy(critic.value(critic(feat))) == 0)
    for slow, fast in zip(critic.slow_weights(), critic.fast_weights()):
        np.testing.assert_array_equal(to_numpy(slow), to_numpy(fast))
    assert not any(v.trainable for v in critic.slow_weights())
    assert len(critic.trainable_weights) == len(critic.fast_weights())

    # Reference (SlowModel): after optimizer update k (k = 0, 1, ...), mix =
    # rate if k % every == 0; `update_slow` at the start of step k + 1 does it.
    rng = np.random.default_rng(1)
    slow_np = [to_numpy(w) for w in critic.slow_weights()]
    critic.update_slow()  # start of step 0: nothing happened yet
    for k in range(5):
        new = [to_numpy(w) + rng.normal(size=w.shape) for w in critic.fast_weights()]
        for w, value in zip(critic.fast_weights(), new):
            w.assign(value)  # "optimizer update k"
        mix = 0.25 if k % 2 == 0 else 0.0
        slow_np = [mix * f + (1 - mix) * s for f, s in zip(new, slow_np)]
        critic.update_slow()  # start of step k + 1
        for slow, expected in zip(critic.slow_weights(), slow_np):
            np.testing.assert_allclose(to_numpy(slow), expected, rtol=1e-5, atol=1e-6)
    clone = kd.layers.Critic.from_config(critic.get_config())
    assert clone.get_config() == critic.get_config()


def test_return_normalizer_matches_numpy_percentile_ema():
    norm = kd.layers.ReturnNormalizer()
    norm.build()
    rng = np.random.default_rng(0)
    lo = hi = 0.0
    for _ in range(4):
        x = rng.normal(3.0, 10.0, size=(64, 15)).astype("float32")
        norm.update(x)
        lo = 0.99 * lo + 0.01 * np.percentile(x, 5)
        hi = 0.99 * hi + 0.01 * np.percentile(x, 95)
        offset, scale = (float(keras.ops.convert_to_numpy(v)) for v in norm.stats())
        np.testing.assert_allclose(offset, lo, rtol=1e-4)
        np.testing.assert_allclose(scale, max(1.0, hi - lo), rtol=1e-4)
    assert kd.layers.ReturnNormalizer.from_config(norm.get_config()).rate == 0.01


def test_lambda_and_replay_returns_match_numpy():
    rng = np.random.default_rng(0)
    reward = rng.normal(size=(3, 16)).astype("float32")
    cont = rng.uniform(size=(3, 16)).astype("float32")
    value = rng.normal(size=(3, 16)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(kd.returns.lambda_return(reward, cont, value, 0.95)),
        np_lambda_return(reward, cont, value, 0.95),
        rtol=1e-5,
        atol=1e-6,
    )
    last = rng.uniform(size=(3, 16)) < 0.2
    term = last & (rng.uniform(size=(3, 16)) < 0.5)
    np.testing.assert_allclose(
        to_numpy(kd.returns.replay_return(reward, last, term, value, 0.997, 0.95)),
        np_replay_return(reward, last, term, value, 0.997, 0.95),
        rtol=1e-5,
        atol=1e-6,
    )


def test_parameter_counts_equal_the_reference():
    def count(layer):
        return sum(int(np.prod(v.shape)) for v in layer.trainable_weights)

    for preset, policy, value in (
        ("size1m", 50706, 66111),
        ("size12m", 792594, 853503),
    ):
        agent = kd.Agent({"image": (64, 64, 3)}, kd.Discrete(18), preset=preset)
        assert (count(agent.actor), count(agent.critic)) == (policy, value), preset


# ---------------------------------------------------------------- losses


def test_actor_critic_losses_match_numpy(agent):
    batch = random_batch(batch=2, length=5, seed=3)
    batch["is_last"][0, 3] = True
    batch["is_terminal"][0, 3] = True
    batch["is_first"][0, 4] = True
    outputs = agent(batch)
    lo0, hi0 = (
        float(keras.ops.convert_to_numpy(v))
        for v in (agent.retnorm.lo, agent.retnorm.hi)
    )
    terms = to_numpy(agent.actor_critic_terms(batch, outputs, update=True))
    agent.retnorm.lo.assign(lo0)
    agent.retnorm.hi.assign(hi0)
    config = agent.agent_config
    reward, cont, value = (
        terms[k].astype(np.float64) for k in ("reward", "cont", "value")
    )
    ret = np_lambda_return(reward, cont, value, 0.95)
    np.testing.assert_allclose(terms["return"], ret, rtol=1e-4, atol=1e-5)
    weight = np.cumprod(cont, 1)[:, :-1]  # w_0 = c_0
    np.testing.assert_allclose(terms["weight"], weight, rtol=1e-5)
    lo = 0.99 * lo0 + 0.01 * np.percentile(ret, 5)
    hi = 0.99 * hi0 + 0.01 * np.percentile(ret, 95)
    scale = max(1.0, hi - lo)
    adv = (ret - value[:, :-1]) / scale
    np.testing.assert_allclose(terms["advantage"], adv, rtol=1e-4, atol=1e-5)

    logq = np_log_softmax(terms["dist"]["logits"].astype(np.float64))
    action = terms["traj"]["action"]
    logp = (action * logq).sum(-1)
    entropy = -(np.exp(logq) * logq).sum(-1)
    policy = np.mean(-weight * (logp * adv + 3e-4 * entropy))
    np.testing.assert_allclose(
        terms["policy_loss"].mean(), policy, rtol=1e-4, atol=1e-6
    )

    bins = np_bins(config["critic_bins"])
    logits = to_numpy(agent.critic(terms["feat"]))[:, :-1].astype(np.float64)
    value_loss = weight * (
        np_twohot_ce(logits, ret, bins)
        + np_twohot_ce(logits, terms["slow_value"][:, :-1], bins)
    )
    np.testing.assert_allclose(terms["value_loss"].mean(), value_loss.mean(), rtol=1e-4)

    boot = ret[:, 0].reshape(2, 5)
    target = np_replay_return(
        batch["reward"], batch["is_last"], batch["is_terminal"], boot, 1 - 1 / 333, 0.95
    )
    np.testing.assert_allclose(terms["replay_target"], target, rtol=1e-4, atol=1e-5)
    feat = to_numpy(agent.world_model.feat_vector(outputs))
    rlogits = to_numpy(agent.critic(feat))[:, :-1].astype(np.float64)
    repval = (1 - batch["is_last"][:, :-1]) * (
        np_twohot_ce(rlogits, target, bins)
        + np_twohot_ce(rlogits, terms["replay_slow"][:, :-1], bins)
    )
    np.testing.assert_allclose(terms["repval_loss"].mean(), repval.mean(), rtol=1e-4)


def test_imagination_starts_from_every_posterior_state(agent):
    batch = random_batch(batch=2, length=4, seed=1)
    outputs = agent(batch)
    terms = to_numpy(agent.actor_critic_terms(batch, outputs))
    horizon = agent.agent_config["imag_length"]
    assert terms["feat"].shape[:2] == (8, horizon + 1)
    start = to_numpy(outputs["deter"]).reshape(8, -1)
    np.testing.assert_allclose(terms["traj"]["deter"][:, 0], start, rtol=1e-6)
    assert terms["policy_loss"].shape == (8, horizon)


def test_gradients_of_imagined_losses_skip_the_world_model():
    keras.utils.set_random_seed(2)
    agent = kd.Agent({"image": SMALL_IMAGE}, kd.Discrete(3), **SMALL_AGENT)
    # The critic's output layer starts at zero, which blocks every gradient
    # through it; give it weights as after some training.
    kernel = agent.critic.out.kernel
    kernel.assign(np.random.default_rng(0).normal(size=kernel.shape) * 0.1)
    batch = random_batch(batch=2, length=4, seed=2)
    wm_vars = agent.world_model.trainable_variables

    def loss_of(keys):
        def fn():
            values = agent.loss_metrics(batch)
            return sum(values[k] for k in keys)

        return fn

    _, grads = value_and_grad(loss_of(["loss/policy", "loss/value"]), wm_vars)
    norms = [0.0 if g is None else float(np.abs(to_numpy(g)).max()) for g in grads]
    assert max(norms) == 0.0
    _, grads = value_and_grad(loss_of(["loss/repval"]), wm_vars)
    touched = {
        v.path.split("/")[0]
        for v, g in zip(wm_vars, grads)
        if g is not None and float(np.abs(to_numpy(g)).max()) > 0
    }
    assert {"encoder", "rssm"} <= touched, touched
    actor_vars = agent.actor.trainable_variables
    _, grads = value_and_grad(loss_of(["loss/policy"]), actor_vars)
    assert max(float(np.abs(to_numpy(g)).max()) for g in grads) > 0


def test_zero_agent_scales_give_the_world_model_loss():
    keras.utils.set_random_seed(0)
    zero = {"policy": 0.0, "value": 0.0, "repval": 0.0}
    agent = kd.Agent({"image": SMALL_IMAGE}, 3, loss_scales=zero, **SMALL_AGENT)
    batch = random_batch(batch=2, length=4, seed=4)
    noise = np.random.default_rng(0).uniform(size=(2, 4, 2, 4)).astype("float32")
    outputs = agent(batch, noise=noise)
    total = to_numpy(agent.loss_metrics(batch, outputs)["loss"])
    world = to_numpy(agent.world_model.loss_metrics(batch, outputs)["loss"])
    np.testing.assert_allclose(total, world, rtol=1e-6)


def test_train_step_updates_slow_critic_and_normalizer_and_logs_keys(agent):
    batch = random_batch(batch=2, length=4, seed=5)
    bias = agent.critic.out.bias  # non-zero values, so returns spread
    bias.assign(np.random.default_rng(0).normal(size=bias.shape))
    count = int(keras.ops.convert_to_numpy(agent.critic.slow_updates))
    logs = agent.train_on_batch(batch, return_dict=True)
    logs = agent.train_on_batch(batch, return_dict=True)
    assert int(keras.ops.convert_to_numpy(agent.critic.slow_updates)) == count + 2
    assert float(keras.ops.convert_to_numpy(agent.retnorm.hi)) != 0.0
    for key in (
        "loss/policy",
        "loss/value",
        "loss/repval",
        "ret",
        "val",
        "adv",
        "ret_min",
        "ret_max",
        "ent/action",
        "loss/image",
        "loss/dyn",
        "opt/grad_norm",
    ):
        assert key in logs and np.isfinite(logs[key]), key
    slow = [to_numpy(w) for w in agent.critic.slow_weights()]
    fast = [to_numpy(w) for w in agent.critic.fast_weights()]
    assert any(not np.array_equal(s, f) for s, f in zip(slow, fast))


def test_keras_round_trip_gives_identical_outputs(agent, tmp_path):
    batch = random_batch(batch=2, length=4, seed=6)
    agent.train_on_batch(batch)
    path = tmp_path / "agent.keras"
    agent.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kd.Agent) and isinstance(
        loaded.world_model, kd.WorldModel
    )
    for a, b in zip(agent.weights, loaded.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    obs = {"image": batch["image"][:, 0], "is_first": np.ones(2, bool)}
    noise = {
        "action": np.full((2, 3), 0.5, "float32"),
        "latent": np.full((2, 2, 4), 0.5, "float32"),
    }
    carry = agent.initial_policy_carry(2)
    ours = to_numpy(agent.policy_step(carry, obs, noise=noise))
    theirs = to_numpy(loaded.policy_step(carry, obs, noise=noise))
    keras.tree.map_structure(np.testing.assert_array_equal, ours, theirs)
    feat = np.ones((2, agent.actor.net.hidden[0].dense.kernel.shape[0]), "float32")
    np.testing.assert_array_equal(
        to_numpy(agent.critic.slow_value(feat)),
        to_numpy(loaded.critic.slow_value(feat)),
    )
    assert loaded.agent_config == agent.agent_config


def test_bad_agent_arguments_name_the_culprit():
    with pytest.raises(ValueError, match="actent_typo"):
        kd.Agent({"image": SMALL_IMAGE}, 3, actent_typo=1.0, **SMALL_AGENT)
    with pytest.raises(ValueError, match="eval_mode"):
        kd.Agent({"image": SMALL_IMAGE}, 3, eval_mode="argmax", **SMALL_AGENT)
    with pytest.raises(ValueError, match="finite bounds"):
        kd.Agent({"image": SMALL_IMAGE}, kd.Box((2,)), **SMALL_AGENT)


@pytest.mark.parametrize("length", [0, -3, 2.5, True])
def test_imag_length_below_one_is_refused_at_construction(length):
    with pytest.raises(ValueError, match=r"imag_length must be an int >= 1"):
        kd.Agent({"image": SMALL_IMAGE}, 3, imag_length=length, **SMALL_AGENT)


def test_misspelled_or_negative_agent_loss_scales_are_refused():
    with pytest.raises(ValueError) as info:
        kd.Agent({"image": SMALL_IMAGE}, 3, loss_scales={"polcy": 1}, **SMALL_AGENT)
    message = str(info.value)
    assert "'polcy'" in message and "did you mean 'policy'" in message
    # Every key the agent's losses have is listed: the world model's and its own.
    valid = "con, dyn, image, policy, rec, rep, repval, rew, value"
    assert message.endswith(f"valid keys: {valid}.")
    with pytest.raises(ValueError, match=r"loss_scales\['value'\] must be .* >= 0"):
        kd.Agent({"image": SMALL_IMAGE}, 3, loss_scales={"value": -1}, **SMALL_AGENT)
    with pytest.raises(ValueError, match=r"loss_scales\['dyn'\].*nan"):
        kd.Agent(
            {"image": SMALL_IMAGE}, 3, loss_scales={"dyn": float("nan")}, **SMALL_AGENT
        )
    # A scale of 0 switches a term off and is fine.
    agent = kd.Agent(
        {"image": SMALL_IMAGE}, 3, loss_scales={"repval": 0}, **SMALL_AGENT
    )
    assert agent.agent_config["loss_scales"]["repval"] == 0


def test_agent_adopts_the_world_models_overrides():
    wm = kd.WorldModel({"image": SMALL_IMAGE}, kd.Discrete(3), deter=32, **SMALL_AGENT)
    assert wm.overrides == {"deter": 32, "mults": (4, 4)}
    wm.overrides["deter"] = 64  # a copy: the model's config stays
    assert wm.overrides["deter"] == 32
    agent = kd.Agent({"image": SMALL_IMAGE}, kd.Discrete(3), world_model=wm, seed=0)
    assert agent.world_model is wm and agent.preset == "debug"
    config = agent.get_config()
    assert config["deter"] == 32 and config["mults"] == [4, 4]
    rebuilt = kd.Agent.from_config(config)
    assert rebuilt.world_model.config["deter"] == 32
    assert rebuilt.world_model.overrides["deter"] == 32
