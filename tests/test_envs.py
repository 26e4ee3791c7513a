"""The env protocol, the embedded Catch env and `kd.envs.make`."""

import sys

import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer.envs import Catch
from keras_dreamer.envs import CheckedEnv
from keras_dreamer.envs import Env
from keras_dreamer.envs import check_obs
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete

pytestmark = pytest.mark.backend_independent


def rollout(env, actions, seed=None):
    obs = [env.reset(seed=seed)]
    obs += [env.step(action) for action in actions]
    return obs


def assert_obs_contract(obs, env):
    assert set(obs) == {*env.obs_space, "reward", "is_first", "is_last", "is_terminal"}
    for key, space in env.obs_space.items():
        assert obs[key].dtype == space.dtype and obs[key].shape == space.shape
    assert obs["reward"].dtype == np.float32 and obs["reward"].shape == ()
    for key in ("is_first", "is_last", "is_terminal"):
        assert isinstance(obs[key], bool)
    assert not obs["is_terminal"] or obs["is_last"]


def track_ball(obs):
    """A scripted Catch policy: move the paddle under the ball (read from pixels)."""
    image = obs["image"].astype(int)
    ball = np.argwhere((image[..., 0] > 200) & (image[..., 2] < 100))
    paddle = np.argwhere(image[..., 2] > 200)
    if not len(ball) or not len(paddle):
        return 0
    offset = ball[:, 1].mean() - paddle[:, 1].mean()
    return 0 if abs(offset) < 2 else (2 if offset > 0 else 1)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_catch_obs_contract(size):
    env = Catch(size=size, seed=0)
    assert env.obs_space == {"image": Box((size, size, 3), 0, 255, "uint8")}
    assert env.act_space == Discrete(3)
    rng = np.random.default_rng(0)
    for obs in rollout(env, rng.integers(3, size=200)):
        assert_obs_contract(obs, env)
        assert float(obs["reward"]) in (-1.0, 0.0, 1.0)


def test_catch_is_deterministic_per_seed():
    actions = np.random.default_rng(1).integers(3, size=300)
    first = rollout(Catch(size=16, seed=7), actions)
    again = rollout(Catch(size=16, seed=7), actions)
    other = rollout(Catch(size=16, seed=8), actions)
    for a, b in zip(first, again):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    images = np.stack([o["image"] for o in first])
    assert not np.array_equal(images, np.stack([o["image"] for o in other]))
    # reset(seed=...) replays the same episode on a used env.
    env = Catch(size=16)
    env.reset(seed=3)
    repeat = rollout(env, actions[:50], seed=7)
    for a, b in zip(first[:51], repeat):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_catch_moves_paddle_and_ball():
    env = Catch(size=64, seed=0)
    start = env.reset()["image"]
    left = env.step(1)["image"]
    right = env.step(2)["image"]

    def paddle_x(image):
        return np.argwhere(image[..., 2] > 200)[:, 1].mean()

    def ball_y(image):
        return np.argwhere((image[..., 0] > 200) & (image[..., 2] < 100))[:, 0].mean()

    assert paddle_x(left) == paddle_x(start) - 4
    assert paddle_x(right) == paddle_x(start)
    assert ball_y(start) < ball_y(left) < ball_y(right)  # the ball falls by itself


def test_catch_rewards_and_episode_end():
    env = Catch(size=32, lives=2, seed=0)
    obs, rewards, tracked = env.reset(), [], []
    while not obs["is_last"]:
        obs = env.step(np.random.default_rng(len(rewards)).integers(3))
        rewards.append(float(obs["reward"]))
    assert obs["is_terminal"] and rewards.count(-1.0) == 2
    # After is_last the next step starts a new episode and ignores the action.
    assert env.step(2)["is_first"]
    obs = env.reset(seed=0)
    for _ in range(300):
        obs = env.step(track_ball(obs))
        tracked.append(float(obs["reward"]))
    assert tracked.count(1.0) >= 5 and tracked.count(-1.0) < 2


def test_catch_time_limit_truncates():
    env = Catch(size=16, max_steps=5, seed=0)
    obs = rollout(env, [0] * 5)
    assert [o["is_last"] for o in obs] == [False] * 5 + [True]
    assert not obs[-1]["is_terminal"]


def test_step_before_reset_starts_an_episode():
    obs = Catch(size=16, seed=0).step(0)
    assert obs["is_first"] and not obs["is_last"]


@pytest.mark.parametrize(
    "action", [3, -1, 1.5, "left", [0, 1], [0.5, 0.5, 0.0], [1, 1, 0]]
)
def test_action_outside_space_raises(action):
    env = Catch(size=16, seed=0)
    env.reset()
    with pytest.raises(ValueError, match=r"Catch\.step: Discrete\(3\)"):
        env.step(action)


def test_one_hot_and_index_actions_agree():
    a = rollout(Catch(size=16, seed=2), [0, 1, 2, 2])
    b = rollout(
        Catch(size=16, seed=2), [np.eye(3, dtype=np.float32)[i] for i in [0, 1, 2, 2]]
    )
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])


class BadImageEnv(Env):
    """An env whose image breaks its own obs_space (dtype or shape)."""

    def __init__(self, dtype="uint8", shape=(8, 8, 3)):
        self.obs_space = {"image": Box((8, 8, 3), 0, 255, "uint8")}
        self.act_space = Discrete(2)
        self._image = np.zeros(shape, dtype)

    def _reset(self, seed):
        return {"image": self._image}

    def _step(self, action):
        return {"image": self._image}, 0.0, False, False


@pytest.mark.parametrize(
    "kwargs, actual",
    [
        ({"dtype": "float32"}, "dtype float32 and shape (8, 8, 3)"),
        ({"shape": (8, 8)}, "dtype uint8 and shape (8, 8)"),
    ],
)
def test_wrong_obs_dtype_or_shape_names_key(kwargs, actual):
    with pytest.raises(ValueError) as info:
        BadImageEnv(**kwargs).reset()
    message = str(info.value)
    assert "BadImageEnv" in message and "'image'" in message and actual in message
    assert "expects dtype uint8 and shape (8, 8, 3)" in message


class ProtocolEnv:
    """An env written without the base class (the plain protocol)."""

    obs_space = {"vector": Box((2,))}
    act_space = Box((2,), -1, 1)

    def __init__(self, vector_dtype=np.float32, restart=True):
        self._dtype = vector_dtype
        self._restart = restart
        self._t = 0

    def _obs(self, first, last):
        return {
            "vector": np.zeros(2, self._dtype),
            "reward": np.float32(0),
            "is_first": first,
            "is_last": last,
            "is_terminal": False,
        }

    def reset(self, seed=None):
        self._t = 0
        return self._obs(True, False)

    def step(self, action):
        self._t += 1
        return self._obs(self._restart and self._t == 3, self._t == 2)


def test_checked_env_checks_a_protocol_env():
    env = CheckedEnv(ProtocolEnv())
    assert env.reset()["is_first"]
    env.step([0.5, -0.5])
    with pytest.raises(ValueError, match="outside the bounds"):
        env.step([2.0, 0.0])
    with pytest.raises(ValueError, match="'vector' with dtype float64"):
        CheckedEnv(ProtocolEnv(vector_dtype=np.float64)).reset()
    broken = CheckedEnv(ProtocolEnv(restart=False))
    broken.reset()
    broken.step([0, 0])
    assert broken.step([0, 0])["is_last"]
    with pytest.raises(ValueError, match="is_first obs after"):
        broken.step([0, 0])


def test_check_obs_rejects_missing_and_unknown_keys():
    space = {"image": Box((2, 2, 3), 0, 255, "uint8")}
    obs = {
        "image": np.zeros((2, 2, 3), np.uint8),
        "reward": np.float32(0),
        "is_first": True,
        "is_last": False,
        "is_terminal": False,
    }
    check_obs({**obs, "log/x": 1}, space)
    with pytest.raises(ValueError, match="no 'image' observation"):
        check_obs({k: v for k, v in obs.items() if k != "image"}, space)
    with pytest.raises(ValueError, match="'extra'"):
        check_obs({**obs, "extra": 1}, space)
    with pytest.raises(ValueError, match="'reward' with dtype float64"):
        check_obs({**obs, "reward": np.float64(0)}, space)
    with pytest.raises(ValueError, match="'is_last' = 0"):
        check_obs({**obs, "is_last": 0}, space)


def test_make_names():
    assert isinstance(kd.envs.make("default", size=16), Catch)
    assert isinstance(kd.envs.make("catch", size=16), Catch)
    for bad in ["pong", "atari:", "gym:", "crafter:x", None]:
        with pytest.raises(ValueError, match="Valid names: 'default'.*'atari:<Game>'"):
            kd.envs.make(bad)
    with pytest.raises(ValueError, match="size"):
        kd.envs.make("default", size=8)


@pytest.mark.parametrize(
    "name, module", [("crafter", "crafter"), ("atari:Pong", "ale_py")]
)
def test_missing_extra_names_it(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(
        ModuleNotFoundError, match=r'pip install "keras-dreamer\[envs\]"'
    ):
        kd.envs.make(name)
