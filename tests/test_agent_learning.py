"""The agent learns: a contextual bandit only a learned policy can score on,
and the policy's carry, modes and fresh weights during `fit`."""

import keras
import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer.envs.base import Env
from tests.helpers import to_numpy


class ContextBandit(Env):
    """Shows a context (one of 2, one-hot); the next step pays +1 for the
    matching action and -1 for the other, then the episode ends. A random
    policy scores 0 on average, a learned one +1."""

    def __init__(self, seed=None):
        self.obs_space = {"context": kd.Box((2,), 0.0, 1.0)}
        self.act_space = kd.Discrete(2)
        self._rng = np.random.default_rng(seed)
        self._context = 0

    def _obs(self):
        return {"context": np.eye(2, dtype=np.float32)[self._context]}

    def _reset(self, seed):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._context = int(self._rng.integers(2))
        return self._obs()

    def _step(self, action):
        reward = 1.0 if action == self._context else -1.0
        # The last obs still shows the context: the reward is then a function
        # of the posterior's latent and the previous action.
        return self._obs(), reward, True, False


def play(policy, envs, episodes):
    """Mean score of `episodes` episodes per env, stepping all envs at once."""
    scores = []
    for _ in range(episodes):
        obs = [env.reset() for env in envs]
        batch = {k: np.stack([o[k] for o in obs]) for k in ("context", "is_first")}
        actions = policy(batch)
        scores += [float(env.step(a)["reward"]) for env, a in zip(envs, actions)]
    return float(np.mean(scores))


@pytest.mark.slow
def test_fit_solves_a_contextual_bandit():
    keras.utils.set_random_seed(0)
    env = ContextBandit(seed=0)
    # size1m on a vector obs has no CNN, so it trains fast; the debug
    # preset's reward head (5 bins) cannot represent rewards of +-1. The
    # higher entropy bonus keeps the policy from committing (at this high
    # learning rate) before the world model has learned the reward.
    agent = kd.Agent(env.obs_space, env.act_space, preset="size1m", seed=0, actent=1e-2)
    agent.compile(optimizer=kd.optimizers.LaProp(learning_rate=1e-3, warmup=0))
    data = kd.data.Collector(
        env, policy=agent.policy, batch_size=8, batch_length=8, train_ratio=16, seed=0
    )
    eval_envs = [ContextBandit(seed=i + 10) for i in range(8)]
    before = play(agent.make_policy("eval", seed=1), eval_envs, 8)
    agent.fit(data, steps_per_epoch=50, epochs=8, verbose=0)
    after = play(agent.make_policy("eval", seed=1), eval_envs, 8)
    assert abs(before) < 0.5
    assert after > 0.8, (before, after)


def small_agent(**kwargs):
    keras.utils.set_random_seed(0)
    return kd.Agent(
        {"image": (16, 16, 3)},
        kd.Discrete(3),
        preset="debug",
        mults=(4, 4),
        seed=0,
        **kwargs,
    )


def image_obs(count, first, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8),
        "is_first": np.asarray(first, bool),
    }


def test_policy_step_resets_the_carry_where_is_first():
    agent = small_agent()
    noise = {
        "action": np.full((2, 3), 0.3, "float32"),
        "latent": np.full((2, 2, 4), 0.6, "float32"),
    }
    carry = agent.initial_policy_carry(2)
    for t in range(3):
        carry, _ = agent.policy_step(
            carry, image_obs(2, [t == 0] * 2, seed=t), noise=noise
        )
    obs = image_obs(2, [True, False], seed=9)
    reset, action = agent.policy_step(carry, obs, noise=noise)
    fresh, fresh_action = agent.policy_step(
        agent.initial_policy_carry(2), obs, noise=noise
    )
    reset, fresh = to_numpy(reset), to_numpy(fresh)
    np.testing.assert_allclose(reset["deter"][0], fresh["deter"][0], rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(action)[0], to_numpy(fresh_action)[0])
    assert not np.allclose(reset["deter"][1], fresh["deter"][1])


def test_stateful_policy_keeps_and_resets_its_carry():
    agent = small_agent()
    used, new = agent.make_policy("train", seed=3), agent.make_policy("train", seed=3)
    for t in range(3):
        used(image_obs(4, [t == 0] * 4, seed=t))
    new(image_obs(4, [True] * 4, seed=0))
    for t in (1, 2):
        new(image_obs(4, [False] * 4, seed=t))
    state = used.get_state()
    new.set_state(state)
    obs = image_obs(4, [True] * 4, seed=7)
    assert np.array_equal(used(obs), new(obs))
    with pytest.raises(ValueError, match="3 envs but its state holds 4"):
        used(image_obs(3, [True] * 3))
    with pytest.raises(ValueError, match="lack \\['image'\\]"):
        used({"is_first": np.ones(4, bool)})
    with pytest.raises(ValueError, match="'image' has shape"):
        used({"image": np.zeros((4, 8, 8, 3), np.uint8), "is_first": np.ones(4, bool)})
    used.reset()
    assert used(image_obs(3, [True] * 3)).shape == (3, 3)


@pytest.mark.parametrize("eval_mode", ["sample", "mode"])
def test_evaluation_follows_its_sample_or_mode_rule(eval_mode):
    agent = small_agent(eval_mode=eval_mode, actor_outscale=1.0)
    obs = {k: np.repeat(v, 64, 0) for k, v in image_obs(1, [True], seed=1).items()}
    rng = np.random.default_rng(0)
    noise = {
        "action": rng.uniform(size=(64, 3)).astype("float32"),
        "latent": np.full((64, 2, 4), 0.5, "float32"),
    }  # one state for all
    carry = agent.initial_policy_carry(64)
    _, train = agent.policy_step(carry, obs, mode="train", noise=noise)
    _, evaluation = agent.policy_step(carry, obs, mode="eval", noise=noise)
    train, evaluation = to_numpy(train).argmax(-1), to_numpy(evaluation).argmax(-1)
    assert len(set(train.tolist())) > 1  # training always samples
    if eval_mode == "mode":
        assert len(set(evaluation.tolist())) == 1
        state, feat = agent.world_model.rssm.obs_step(
            {k: carry[k] for k in ("deter", "stoch")},
            carry["action"],
            agent.world_model.encoder({"image": obs["image"]}),
            obs["is_first"],
            noise=noise["latent"],
        )
        logits = to_numpy(agent.actor(agent.world_model.feat_vector(feat))["logits"])
        assert evaluation[0] == logits[0].argmax()
    else:  # the reference samples in evaluation too
        np.testing.assert_array_equal(evaluation, train)


def test_policy_acts_with_the_latest_weights_during_fit():
    agent = small_agent()
    agent.compile(optimizer=kd.optimizers.LaProp(learning_rate=1e-2, warmup=0))
    env = kd.envs.make("default", size=16)
    data = kd.data.Collector(
        env, policy=agent.policy, batch_size=2, batch_length=8, train_ratio=8, seed=0
    )
    kernel = agent.actor.net.out.kernel
    initial = to_numpy(kernel)
    checks = []

    class Check(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch < 2:
                return
            current = to_numpy(self.model.actor.net.out.kernel)  # synced state
            snapshot = agent.acting_weights.values()
            if snapshot is None:  # TensorFlow: policies read the variables
                acting = to_numpy(kernel)
            else:
                index = [id(v) for v in agent.acting_weights.variables].index(
                    id(kernel)
                )
                acting = to_numpy(snapshot[index])
            checks.append(
                (np.array_equal(acting, current), not np.array_equal(current, initial))
            )

    agent.fit(data, steps_per_epoch=4, epochs=1, verbose=0, callbacks=[Check()])
    assert checks and all(same and moved for same, moved in checks), checks
    assert agent.acting_weights.values() is None  # after fit: the variables


@pytest.mark.parametrize(
    "env_kwargs, culprit", [({"size": 32}, "image"), ({"size": 16}, "action")]
)
def test_fit_rejects_an_env_that_does_not_match_the_agent(env_kwargs, culprit):
    actions = 4 if culprit == "action" else 3
    agent = kd.Agent(
        {"image": (16, 16, 3)}, kd.Discrete(actions), preset="debug", mults=(4, 4)
    )
    agent.compile()
    env = kd.envs.make("default", **env_kwargs)
    data = kd.data.Collector(env, batch_size=2, batch_length=4, seed=0)
    with pytest.raises(ValueError, match=culprit):
        agent.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
