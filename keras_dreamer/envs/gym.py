"""Gymnasium and Atari adapters (need the `envs` extra)."""

import numpy as np

from keras_dreamer.envs.base import Env
from keras_dreamer.envs.base import image_box
from keras_dreamer.envs.base import image_size
from keras_dreamer.envs.base import require
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete

DEFAULT_STICKY = 0.25


class Gym(Env):
    """Any Gymnasium env with image observations or `rgb_array` rendering.

    The image comes from the env's observations when they are uint8 images
    (H, W) or (H, W, C), else from `env.render()` (an env made from an id
    gets `render_mode="rgb_array"`). It is resized with Pillow (bilinear)
    and optionally turned to grayscale. Each `step` repeats the action
    `repeat` times and sums the rewards; with `sticky > 0` every repeated
    step keeps the previous action with that probability; with `pool=True`
    the image is the elementwise maximum of the last two frames (standard
    Atari preprocessing against flicker).

    - Observation: `{image_key: uint8 (height, width, 1 if gray else 3)}`.
    - Actions: `Discrete(n)` for a Gymnasium `Discrete` space (its `start`
      offset is handled), `Box` for a Gymnasium `Box`.
    - Episode end: Gymnasium's `terminated` is `is_terminal`; `truncated`
      ends the episode without it.

    Args:
        env: a Gymnasium env id (e.g. `"ALE/Breakout-v5"`) or env instance.
        size: output image size, an int or `(height, width)`.
        gray: convert the image to one grayscale channel.
        repeat: env steps per `step` call (action repeat, rewards summed).
        sticky: probability of keeping the previous action at each env step.
        pool: max-pool the last two frames of each `step`.
        image_key: name of the image in the obs dict.
        seed: int seed for the first reset and the sticky actions, or None.
        **make_kwargs: passed to `gymnasium.make` when `env` is an id.

    Examples:
        >>> env = Gym("ALE/Pong-v5", size=64, gray=True)
        >>> env.reset(seed=0)["image"].shape
        (64, 64, 1)
        >>> env.close()
    """

    def __init__(
        self,
        env,
        size=64,
        gray=False,
        repeat=1,
        sticky=0.0,
        pool=False,
        image_key="image",
        seed=None,
        **make_kwargs,
    ):
        gym = require("gymnasium", "The Gymnasium env")
        if isinstance(env, str):
            if env.startswith("ALE/"):
                gym.register_envs(require("ale_py", "Atari"))
            make_kwargs.setdefault("render_mode", "rgb_array")
            env = gym.make(env, **make_kwargs)
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
        self.act_space = _act_space(gym, env.action_space)
        self._from_render = not _is_image(env.observation_space)
        if self._from_render and getattr(env, "render_mode", None) != "rgb_array":
            raise ValueError(
                f"{_env_name(env)} has no image observations "
                f"({env.observation_space}) and does not render rgb_array "
                "frames; make it with render_mode='rgb_array'."
            )
        self._height, self._width = image_size(size)
        self.gray = bool(gray)
        self.repeat = repeat
        self.sticky = float(sticky)
        self.pool = bool(pool)
        self.image_key = image_key
        self.obs_space = {
            image_key: image_box(self._height, self._width, 1 if gray else 3)
        }
        self._rng = np.random.default_rng(seed)
        self._seed = seed
        self._prev_action = None
        self._last_frame = None

    def close(self):
        """Close the Gymnasium env."""
        self._env.close()

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
        return np.asarray(self._env.render() if self._from_render else obs)

    def _observe(self, frames):
        # Only frames of one `step` are pooled: the first observation of an
        # episode is its own frame, never the maximum with a frame of the
        # previous episode (DreamerV3's Atari env once mixed them).
        frame = frames[-1]
        if self.pool and len(frames) > 1:
            frame = np.maximum(frames[-2], frame)
        return {self.image_key: self._process(frame)}

    def _process(self, frame):
        from PIL import Image

        if frame.ndim == 3 and frame.shape[-1] == 1:
            frame = frame[..., 0]
        image = Image.fromarray(frame)
        if self.gray and image.mode != "L":
            image = image.convert("L")
        if image.size != (self._width, self._height):
            image = image.resize((self._width, self._height), Image.BILINEAR)
        array = np.asarray(image)
        if array.ndim == 2:
            array = (
                array[..., None] if self.gray else np.repeat(array[..., None], 3, -1)
            )
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


def _is_image(space):
    shape = getattr(space, "shape", None) or ()
    return getattr(space, "dtype", None) == np.uint8 and (
        len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3))
    )


def _act_space(gym, space):
    if isinstance(space, gym.spaces.Discrete):
        return Discrete(int(space.n))
    if isinstance(space, gym.spaces.Box):
        return Box(space.shape, space.low, space.high, "float32")
    raise ValueError(
        f"Unsupported Gymnasium action space {space}: use an env with a "
        "Discrete or Box action space."
    )


def _env_name(env):
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env).__name__
