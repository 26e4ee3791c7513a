"""Gymnasium and Atari adapters (need the `envs` extra)."""

from typing import NamedTuple

import numpy as np

from keras_dreamer.batch import STEP_KEYS
from keras_dreamer.envs.base import Env
from keras_dreamer.envs.base import image_box
from keras_dreamer.envs.base import image_size
from keras_dreamer.envs.base import require
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete

DEFAULT_STICKY = 0.25


class Gym(Env):
    """Any Gymnasium env, with the observations it gives and optional frames.

    Observations become keys of the obs dict:

    - a `Box` of uint8 images (H, W) or (H, W, C): an image key, resized to
      `size` with Pillow (bilinear; `size=None` keeps it) and given 3
      channels (1 with `gray=True`);
    - any other `Box`: a float32 key of the same shape;
    - a `Discrete(n)`: a `kd.Discrete(n)` key (an int32 index, `start`
      subtracted);
    - a `Dict`: one key per entry, named as in the `Dict`; nested `Dict`
      names are joined with `_` (`{"arm": {"pos": ...}}` gives `arm_pos`),
      `/` in a name becomes `_` (Keras names cannot hold it), and an entry
      called `reward` or `is_*` gets the prefix `obs_`.

    A single (non-`Dict`) observation is named `obs_key`: by default
    `image_key` for an image, `"vector"` for another `Box` and `"state"` for
    a `Discrete`. With `render=True` the env's `rgb_array` frame is added as
    `image_key` (an env made from an id gets `render_mode="rgb_array"`);
    with `render="only"` it is the only observation (learning from pixels).
    `Tuple`, `MultiDiscrete`, `MultiBinary` and other spaces are refused
    with a `ValueError`.

    Each `step` repeats the action `repeat` times and sums the rewards; with
    `sticky > 0` every repeated step keeps the previous action with that
    probability; with `pool=True` each image is the elementwise maximum of
    the last two frames of the step (standard Atari preprocessing against
    flicker); other keys come from the last frame.

    - Actions: `Discrete(n)` for a Gymnasium `Discrete` space (its `start`
      offset is handled), `Box` (the env's bounds) for a Gymnasium `Box`.
    - Episode end: Gymnasium's `terminated` is `is_terminal`; `truncated`
      ends the episode without it.

    Args:
        env: a Gymnasium env id (e.g. `"CartPole-v1"`, `"ALE/Breakout-v5"`)
            or env instance.
        size: image size, an int or `(height, width)`; None keeps each
            image's own size.
        gray: convert images to one grayscale channel.
        repeat: env steps per `step` call (action repeat, rewards summed).
        sticky: probability of keeping the previous action at each env step.
        pool: max-pool the images over the last two frames of each `step`.
        render: False (the observations), True (the observations plus the
            rendered frame as `image_key`) or `"only"` (the rendered frame
            alone).
        image_key: name of the rendered frame, and of a single image
            observation.
        obs_key: name of a single non-`Dict` observation (see above).
        seed: int seed for the first reset and the sticky actions, or None.
        **make_kwargs: passed to `gymnasium.make` when `env` is an id.

    Raises:
        ValueError: an unknown env id, an unsupported observation or action
            space, or `render` without `rgb_array` frames.
        ModuleNotFoundError: `gymnasium` is not installed.

    Examples:
        >>> env = Gym("CartPole-v1", seed=0)
        >>> env.obs_space, env.act_space
        ({'vector': Box((4,), ..., ..., float32)}, Discrete(2))
        >>> env.reset()["vector"].dtype
        dtype('float32')
        >>> pong = Gym("ALE/Pong-v5", size=64, gray=True)
        >>> pong.reset(seed=0)["image"].shape
        (64, 64, 1)
        >>> pong.close()
    """

    def __init__(
        self,
        env,
        size=64,
        gray=False,
        repeat=1,
        sticky=0.0,
        pool=False,
        render=False,
        image_key="image",
        obs_key=None,
        seed=None,
        **make_kwargs,
    ):
        gym = require("gymnasium", "The Gymnasium env")
        if render not in (False, True, "only"):
            raise ValueError(
                f"Gym(render=...) must be False, True or 'only', got {render!r}."
            )
        if isinstance(env, str):
            env = _make(gym, env, render, make_kwargs)
        elif make_kwargs:
            raise ValueError(
                f"Gym got make arguments {sorted(make_kwargs)} with an env "
                "instance; pass them to gymnasium.make yourself."
            )
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"Gym(repeat=...) must be an int >= 1, got {repeat!r}.")
        if not 0.0 <= float(sticky) <= 1.0:
            raise ValueError(f"Gym(sticky=...) must be in [0, 1], got {sticky!r}.")
        self._env = env
        self._gym_act = env.action_space
        self.act_space = _act_space(gym, env.action_space, _env_name(env))
        self._render = render
        if render and getattr(env, "render_mode", None) != "rgb_array":
            raise ValueError(
                f"{_env_name(env)} does not render rgb_array frames "
                f"(render_mode={getattr(env, 'render_mode', None)!r}); make it "
                "with render_mode='rgb_array', or use Gym(render=False)."
            )
        self._size = None if size is None else image_size(size)
        self.gray = bool(gray)
        self.repeat = repeat
        self.sticky = float(sticky)
        self.pool = bool(pool)
        self.image_key = image_key
        name = _env_name(env)
        self._entries = {}
        if render != "only":
            self._entries = _entries(
                gym, env.observation_space, name, image_key, obs_key
            )
        if render and image_key in self._entries:
            raise ValueError(
                f"{name} already has an observation {image_key!r}; name the "
                "rendered frame otherwise with image_key=..."
            )
        self._images = [k for k, e in self._entries.items() if e.kind == "image"]
        self.obs_space = {}
        for key, entry in self._entries.items():
            if entry.kind == "discrete":
                self.obs_space[key] = Discrete(int(entry.space.n))
            elif entry.kind == "vector":
                self.obs_space[key] = _vector_box(entry.space)
            else:
                self.obs_space[key] = self._image_box(entry.space.shape)
        if render:
            self._images.append(image_key)
            shape = (*(self._size or (0, 0)), 3)  # rgb_array frames are RGB
            if self._size is None:
                env.reset(seed=seed)  # the frame's size: some envs need a reset
                shape = np.shape(env.render())
            self.obs_space[image_key] = self._image_box(shape)
        self._rng = np.random.default_rng(seed)
        self._seed = seed
        self._prev_action = None
        self._last_frame = None

    def close(self):
        """Close the Gymnasium env."""
        self._env.close()

    def _image_box(self, shape):
        height, width = self._size or shape[:2]
        channels = shape[2] if len(shape) == 3 else 1
        if channels in (1, 3):
            channels = 1 if self.gray else 3
        return image_box(height, width, channels)

    def _reset(self, seed):
        return self._observe([self._start(seed)])

    def _step(self, action):
        chosen = self._to_native(action)
        reward, frames = 0.0, []
        terminal = truncated = False
        for k in range(self.repeat):
            native = chosen
            sticky = self.sticky and self._prev_action is not None
            if sticky and self._rng.random() < self.sticky:
                native = self._prev_action  # this env step keeps the last action
            self._prev_action = native
            obs, r, terminal, truncated, _ = self._env.step(native)
            reward += float(r)
            if terminal or truncated or k >= self.repeat - 2:
                frames.append(self._frame(obs))
            if terminal or truncated:
                break
        self._last_frame = frames[-1]
        return self._observe(frames), reward, bool(terminal), bool(truncated)

    def _start(self, seed):
        """Reset the Gymnasium env and return its raw first frame."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        elif self._seed is not None:
            seed, self._seed = self._seed, None  # seed only the first episode
        obs, _ = self._env.reset(seed=None if seed is None else int(seed))
        self._prev_action = None
        return self._frame(obs)

    def _to_native(self, action):
        if isinstance(self.act_space, Discrete):
            return int(self._gym_act.start) + action
        return action.astype(self._gym_act.dtype)

    def _frame(self, obs):
        """The raw values of every key (images not yet resized)."""
        frame = {}
        for key, entry in self._entries.items():
            value = obs
            for part in entry.path:
                value = value[part]
            if entry.kind == "discrete":
                frame[key] = np.int32(int(value) - int(entry.space.start))
            elif entry.kind == "image":
                frame[key] = np.asarray(value)
            else:
                frame[key] = np.asarray(value, np.float32)
        if self._render:
            frame[self.image_key] = np.asarray(self._env.render())
        return frame

    def _observe(self, frames):
        # Only frames of one `step` are pooled: the first observation of an
        # episode is its own frame, never the maximum with a frame of the
        # previous episode (DreamerV3's Atari env once mixed them).
        obs = dict(frames[-1])
        for key in self._images:
            image = obs[key]
            if self.pool and len(frames) > 1:
                image = np.maximum(frames[-2][key], image)
            obs[key] = self._process(image, self.obs_space[key].shape)
        return obs

    def _process(self, frame, shape):
        from PIL import Image

        height, width, channels = shape
        if frame.ndim == 3 and frame.shape[-1] == 1:
            frame = frame[..., 0]
        if frame.ndim == 3 and frame.shape[-1] != 3:
            # Not RGB (e.g. stacked frames): resize channel by channel.
            return np.stack(
                [
                    self._process(frame[..., c], (height, width, 1))[..., 0]
                    for c in range(frame.shape[-1])
                ],
                -1,
            )
        image = Image.fromarray(frame)
        if channels == 1 and image.mode != "L":
            image = image.convert("L")
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], channels, -1)
        return array


class Atari(Gym):
    """An Atari game through ALE with DreamerV3's preprocessing defaults.

    Built as `gymnasium.make("ALE/<game>-v5", frameskip=1, ...)`; the frame
    skip happens here (`repeat` frames per step, rewards summed, the image
    max-pooled over the last two frames). Defaults follow DreamerV3's
    `env.atari` config: 96x96 grayscale, repeat 4, sticky actions (ALE's
    `repeat_action_probability=0.25`), all 18 actions, up to 30 random
    no-ops at the start of an episode, and lives not used. ALE truncates an
    episode after 108,000 frames.

    Args:
        game: the ALE game name, e.g. `"Pong"`.
        size: image size, an int or `(height, width)`.
        gray: grayscale image (one channel) instead of RGB.
        repeat: frames per step (frame skip).
        sticky: True for ALE's standard 0.25, False for 0, or a probability.
        noops: up to this many no-op frames (uniformly drawn) after a reset.
        full_action_space: all 18 actions (True) or the game's minimal set.
        terminal_on_life_loss: end the episode as terminal when a life is
            lost; the next episode then continues the same game (the console
            is only reset on game over) from the current screen.
        seed: int seed (ALE and the no-ops), or None.
        **make_kwargs: more arguments for `gymnasium.make`.

    Examples:
        >>> env = Atari("Pong", size=64, seed=0)
        >>> env.act_space, env.reset()["image"].shape
        (Discrete(18), (64, 64, 1))
        >>> env.close()
    """

    def __init__(
        self,
        game,
        size=96,
        gray=True,
        repeat=4,
        sticky=True,
        noops=30,
        full_action_space=True,
        terminal_on_life_loss=False,
        seed=None,
        **make_kwargs,
    ):
        gym = require("gymnasium", "The Atari env")
        gym.register_envs(require("ale_py", "The Atari env"))
        if isinstance(sticky, bool):
            sticky = DEFAULT_STICKY if sticky else 0.0
        if not isinstance(noops, int) or noops < 0:
            raise ValueError(f"Atari(noops=...) must be an int >= 0, got {noops!r}.")
        try:
            env = gym.make(
                f"ALE/{game}-v5",
                frameskip=1,
                repeat_action_probability=float(sticky),
                full_action_space=bool(full_action_space),
                obs_type="grayscale" if gray else "rgb",
                **make_kwargs,
            )
        except gym.error.Error as err:
            raise ValueError(
                f"Unknown Atari game {game!r} ({err}). Use an ALE game name "
                "such as 'Pong' or 'Breakout'."
            ) from None
        super().__init__(env, size=size, gray=gray, repeat=repeat, pool=True, seed=seed)
        self.game = game
        self.noops = noops
        self.terminal_on_life_loss = bool(terminal_on_life_loss)
        self._ale = env.unwrapped.ale
        self._lives = 0
        self._resume = None

    def _reset(self, seed):
        if self._resume is not None and seed is None:
            # Same game, next life: the episode starts from the console's
            # current screen alone, not the pooled last observation of the
            # life that ended.
            frame, self._resume = self._resume, None
            return self._observe([frame])
        self._resume = None
        frame = self._start(seed)
        for _ in range(int(self._rng.integers(self.noops + 1))):
            obs, _, terminal, truncated, _ = self._env.step(0)
            frame = self._frame(obs)
            if terminal or truncated:
                frame = self._start(None)
        self._lives = self._ale.lives()
        return self._observe([frame])

    def _step(self, action):
        obs, reward, terminal, truncated = super()._step(action)
        lives = self._ale.lives()
        lost, self._lives = lives < self._lives, lives
        if lost and self.terminal_on_life_loss and not (terminal or truncated):
            terminal = True
            self._resume = self._last_frame
        return obs, reward, terminal, truncated


def _make(gym, name, render, make_kwargs):
    """`gymnasium.make(name)`, with one clear line for an unknown id."""
    if name.startswith("ALE/"):
        gym.register_envs(require("ale_py", "Atari"))
    if render:
        make_kwargs.setdefault("render_mode", "rgb_array")
    try:
        return gym.make(name, **make_kwargs)
    except gym.error.Error as err:
        raise ValueError(
            f"Unknown Gymnasium env {name!r} ({err}). Use a registered id such "
            "as 'CartPole-v1' (gymnasium.pprint_registry() lists them)."
        ) from None


class _Entry(NamedTuple):
    """One observation key: where it is in the Gymnasium obs and its kind."""

    path: tuple  # keys into (nested) Dict observations; () for a plain one
    kind: str  # "image", "vector" or "discrete"
    space: object  # the Gymnasium space


def _entries(gym, space, name, image_key, obs_key):
    """`{obs key: _Entry}` for a Gymnasium observation space."""
    if not isinstance(space, gym.spaces.Dict):
        kind = _kind(gym, space, name, "observation")
        default = {"image": image_key, "vector": "vector", "discrete": "state"}
        return {obs_key or default[kind]: _Entry((), kind, space)}
    found = {}

    def visit(dict_space, path):
        for part, sub in dict_space.spaces.items():
            where = (*path, part)
            if isinstance(sub, gym.spaces.Dict):
                visit(sub, where)
                continue
            key = "_".join(map(str, where)).replace("/", "_")
            if key in STEP_KEYS or key.startswith("is_"):
                key = "obs_" + key
            if key in found:
                raise ValueError(
                    f"{name}: the observation entries {'/'.join(found[key].path)} "
                    f"and {'/'.join(map(str, where))} both become the key {key!r}."
                )
            kind = _kind(gym, sub, name, "/".join(map(str, where)))
            if kind == "discrete" or int(np.prod(sub.shape)) > 0:  # drop empty ones
                found[key] = _Entry(where, kind, sub)

    visit(space, ())
    return found


def _kind(gym, space, name, where):
    if isinstance(space, gym.spaces.Discrete):
        return "discrete"
    if isinstance(space, gym.spaces.Box):
        return "image" if _is_image(space) else "vector"
    raise ValueError(
        f"{name}: unsupported Gymnasium observation space {space} ({where}); "
        "expected Box, Discrete or a Dict of them."
    )


def _is_image(space):
    return space.dtype == np.uint8 and len(space.shape) in (2, 3)


def _vector_box(space):
    with np.errstate(over="ignore"):
        low = np.asarray(space.low, np.float32)
        high = np.asarray(space.high, np.float32)
    return Box(space.shape, low, high, "float32")


def _act_space(gym, space, name):
    if isinstance(space, gym.spaces.Discrete):
        return Discrete(int(space.n))
    if isinstance(space, gym.spaces.Box):
        return Box(space.shape, space.low, space.high, "float32")
    raise ValueError(
        f"{name}: unsupported Gymnasium action space {space}; expected Discrete or Box."
    )


def _env_name(env):
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env).__name__
