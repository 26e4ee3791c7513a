"""Crafter, Atari and Gymnasium adapters, stepped for real."""

import gymnasium
import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete

pytestmark = pytest.mark.backend_independent


def check_contract(obs, env):
    keys = {key for key in obs if not key.startswith("log/")}
    assert keys == {*env.obs_space, "reward", "is_first", "is_last", "is_terminal"}
    for key, space in env.obs_space.items():
        assert (obs[key].dtype, obs[key].shape) == (space.dtype, space.shape)
    assert obs["reward"].dtype == np.float32 and obs["reward"].shape == ()


def play(env, steps, seed=0):
    rng = np.random.default_rng(seed)
    obs = [env.reset()]
    for _ in range(steps):
        obs.append(env.step(env.act_space.encode(env.act_space.sample(rng))))
        check_contract(obs[-1], env)
    return obs


def test_crafter_steps_with_achievement_logs():
    env = kd.envs.make("crafter", size=32, seed=0, logs=True)
    assert env.obs_space == {"image": Box((32, 32, 3), 0, 255, "uint8")}
    assert env.act_space == Discrete(17)
    obs = play(env, 30)
    assert obs[0]["is_first"] and not any(o["is_first"] for o in obs[1:])
    assert obs[0]["log/achievement_collect_wood"] == 0
    assert len([key for key in obs[-1] if key.startswith("log/achievement_")]) == 22
    assert len({o["image"].tobytes() for o in obs}) > 1
    again = play(kd.envs.make("crafter", size=32, seed=0, logs=True), 30)
    np.testing.assert_array_equal(obs[-1]["image"], again[-1]["image"])
    env.close()


def test_pong_steps_gray_and_rgb():
    env = kd.envs.make("atari:Pong", size=32, seed=0)
    assert env.obs_space == {"image": Box((32, 32, 1), 0, 255, "uint8")}
    assert env.act_space == Discrete(18)
    obs = play(env, 40)
    again = play(kd.envs.make("atari:Pong", size=32, seed=0), 40)
    for a, b in zip(obs, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert obs[-1]["image"].std() > 0
    rgb = kd.envs.make("atari:Pong", size=(24, 32), gray=False, sticky=False, noops=0)
    assert play(rgb, 5)[-1]["image"].shape == (24, 32, 3)
    with pytest.raises(ValueError, match="Atari"):
        rgb.step(18)


def first_life_loss(env):
    obs, steps = env.reset(), 0
    lives = env._ale.lives()
    while env._ale.lives() == lives:
        obs = env.step(1 if steps % 2 == 0 else 3)  # fire, then move left
        steps += 1
    return obs


def test_atari_life_loss_terminal_only_on_request():
    kwargs = dict(size=16, seed=0, noops=0, sticky=False)
    env = kd.envs.make("atari:Breakout", **kwargs)
    obs = first_life_loss(env)
    assert not obs["is_last"] and not obs["is_terminal"]
    env = kd.envs.make("atari:Breakout", terminal_on_life_loss=True, **kwargs)
    obs = first_life_loss(env)
    assert obs["is_last"] and obs["is_terminal"]
    lives = env._ale.lives()
    restart = env.step(0)  # the next episode continues the same game
    assert restart["is_first"] and env._ale.lives() == lives


def native_screen(env):
    """The console's current screen, read from ALE (gray, full size)."""
    return env._ale.getScreenGrayscale()[..., None]


def test_atari_episode_starts_never_pool_a_frame_of_the_previous_episode():
    # Full-size frames (no resize), so the observation is the raw screen.
    env = kd.envs.make(
        "atari:Pong", size=(210, 160), seed=0, max_num_frames_per_episode=400
    )
    obs, action = env.reset(), 0
    while not obs["is_last"]:  # ALE truncates the episode after 400 frames
        obs = env.step(action % 18)
        action += 1
    first = env.step(0)  # starts the next episode
    assert first["is_first"]
    # A maximum with the last frame would have brightened these pixels.
    assert (obs["image"] > first["image"]).any()
    np.testing.assert_array_equal(first["image"], native_screen(env))

    # The next life of a game (terminal_on_life_loss): the same holds.
    env = kd.envs.make(
        "atari:Breakout",
        size=(210, 160),
        seed=0,
        noops=0,
        sticky=False,
        terminal_on_life_loss=True,
    )
    last = first_life_loss(env)
    screen = native_screen(env)
    assert last["is_last"] and (last["image"] > screen).any()
    restart = env.step(0)
    assert restart["is_first"]
    np.testing.assert_array_equal(restart["image"], screen)


class Reach(gymnasium.Env):
    """A tiny Gymnasium env: vector obs, Box actions, rgb_array rendering."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None):
        self.observation_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        self.render_mode = render_mode
        self.pos = np.zeros(2, np.float32)
        self.t = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.5, 0.5, 2).astype(np.float32)
        self.t = 0
        return self.pos, {}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.1 * action, -1, 1).astype(np.float32)
        self.t += 1
        return self.pos, -float(np.abs(self.pos).sum()), self.t >= 6, False, {}

    def render(self):
        image = np.zeros((40, 30, 3), np.uint8)
        row, col = ((self.pos + 1) / 2 * [39, 29]).astype(int)
        image[row, col] = 255
        return image


gymnasium.register(id="KerasDreamerTest/Reach-v0", entry_point=Reach)


def test_gym_box_actions_render_repeat_and_sticky():
    env = kd.envs.make(
        "gym:KerasDreamerTest/Reach-v0", size=16, repeat=2, render="only", seed=0
    )
    assert env.obs_space == {"image": Box((16, 16, 3), 0, 255, "uint8")}
    assert env.act_space == Box((2,), -1, 1)
    obs = play(env, 3)
    assert obs[-1]["is_last"] and obs[-1]["is_terminal"]  # 6 env steps = 3 x repeat 2
    assert env.step([0.0, 0.0])["is_first"]
    with pytest.raises(ValueError, match="outside the bounds"):
        env.step([2.0, 0.0])
    sticky = kd.envs.make(
        "gym:KerasDreamerTest/Reach-v0", size=16, sticky=1.0, gray=True, render=True
    )
    assert sorted(sticky.obs_space) == ["image", "vector"]
    sticky.reset(seed=1)
    start = sticky._env.unwrapped.pos.copy()
    sticky.step([1.0, 1.0])
    obs = sticky.step([-1.0, -1.0])  # ignored: every step keeps the previous action
    np.testing.assert_allclose(sticky._env.unwrapped.pos, np.clip(start + 0.2, -1, 1))
    np.testing.assert_array_equal(obs["vector"], sticky._env.unwrapped.pos)
    assert sticky.obs_space["image"].shape == (16, 16, 1)


def test_gym_vector_observations_without_rendering():
    env = kd.envs.make("gym:KerasDreamerTest/Reach-v0", seed=0)
    assert env.obs_space == {"vector": Box((2,), -1, 1)}
    obs = play(env, 2)
    np.testing.assert_array_equal(obs[-1]["vector"], env._env.unwrapped.pos)
    vector_only = gymnasium.make("KerasDreamerTest/Reach-v0")  # no render_mode
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        kd.envs.Gym(vector_only, render=True)


def test_gym_cartpole_gives_its_state():
    env = kd.envs.make("gym:CartPole-v1", seed=0)
    assert list(env.obs_space) == ["vector"] and env.act_space == Discrete(2)
    assert env.obs_space["vector"].shape == (4,)
    assert env.obs_space["vector"].dtype == np.float32
    obs = play(env, 5)
    state = np.asarray(env._env.unwrapped.state, np.float32)
    np.testing.assert_allclose(obs[-1]["vector"], state, rtol=1e-6)
    same = play(kd.envs.make("gym:CartPole-v1", seed=0), 5)
    np.testing.assert_array_equal(obs[-1]["vector"], same[-1]["vector"])


class Rover(gymnasium.Env):
    """A tiny Gymnasium env with a nested Dict observation of every kind."""

    def __init__(self):
        box = gymnasium.spaces.Box
        self.observation_space = gymnasium.spaces.Dict(
            {
                "pos": box(-5, 5, (2,), np.float64),
                "camera": box(0, 255, (8, 8, 3), np.uint8),
                "mode": gymnasium.spaces.Discrete(3, start=1),
                "arm": gymnasium.spaces.Dict(
                    {
                        "joints": box(-1, 1, (3,), np.float32),
                        "depth": box(0, 255, (6, 6), np.uint8),
                    }
                ),
            }
        )
        self.action_space = gymnasium.spaces.Discrete(2)
        self.t = 0

    def _obs(self):
        return {
            "pos": np.array([self.t, -self.t], np.float64),
            "camera": np.full((8, 8, 3), 10 * self.t, np.uint8),
            "mode": 1 + self.t % 3,
            "arm": {
                "joints": np.full(3, 0.1 * self.t, np.float32),
                "depth": np.full((6, 6), 20 * self.t, np.uint8),
            },
        }

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action), self.t >= 4, False, {}


def test_gym_dict_observations_one_key_each():
    env = kd.envs.Gym(Rover(), size=4)
    assert env.obs_space == {
        "pos": Box((2,), -5, 5),
        "camera": Box((4, 4, 3), 0, 255, "uint8"),
        "mode": Discrete(3),
        "arm_joints": Box((3,), -1, 1),
        "arm_depth": Box((4, 4, 3), 0, 255, "uint8"),  # RGB unless gray=True
    }
    obs = play(env, 2)
    assert obs[-1]["mode"] == 2 and obs[-1]["mode"].dtype == np.int32  # 3 - start
    np.testing.assert_array_equal(obs[-1]["pos"], [2, -2])
    assert (obs[-1]["camera"] == 20).all() and (obs[-1]["arm_depth"] == 40).all()
    native = kd.envs.Gym(Rover(), size=None, gray=True)
    assert native.obs_space["camera"].shape == (8, 8, 1)
    assert native.obs_space["arm_depth"].shape == (6, 6, 1)
    check_contract(native.reset(), native)


class Odd(gymnasium.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space = observation_space
        self.action_space = action_space


def test_gym_unsupported_spaces_and_names_get_one_line():
    spaces = gymnasium.spaces
    box, two = spaces.Box(-1, 1, (2,)), spaces.Discrete(2)
    cases = [
        (spaces.Tuple((two, two)), two, "observation space Tuple"),
        (spaces.MultiDiscrete([2, 3]), two, "observation space MultiDiscrete"),
        (spaces.Dict({"a": spaces.MultiBinary(3)}), two, r"MultiBinary\(3\) \(a\)"),
        (box, spaces.MultiDiscrete([2, 3]), "action space MultiDiscrete"),
    ]
    for obs_space, act_space, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            kd.envs.Gym(Odd(obs_space, act_space))
        assert "\n" not in str(info.value) and "expected" in str(info.value)
    with pytest.raises(ValueError, match="Unknown Gymnasium env 'NoSuchEnv-v0'"):
        kd.envs.make("gym:NoSuchEnv-v0")


def test_a_discrete_observation_reaches_the_batch():
    env = kd.envs.make("gym:FrozenLake-v1", seed=0)
    assert env.obs_space == {"state": Discrete(16)}
    collector = kd.data.Collector(
        env, replay=kd.data.Replay(1000), batch_size=2, batch_length=8, seed=0
    )
    batch = collector[0]
    assert batch["state"].shape == (2, 8) and batch["state"].dtype == np.int32
    assert 0 <= batch["state"].min() and batch["state"].max() < 16
