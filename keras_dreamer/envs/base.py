"""The environment protocol and its checks.

Every environment in keras-dreamer, embedded or adapted, follows one protocol:

- `env.obs_space`: a dict from observation key to `Box`/`Discrete`, holding
  the observation keys only (for example `{"image": Box((64, 64, 3), 0, 255,
  "uint8")}`).
- `env.act_space`: a `Discrete` or a `Box`.
- `env.reset(seed=None) -> obs` and `env.step(action) -> obs`, where `obs` is a
  dict of the observation keys plus `reward` (a float32 scalar received on
  arriving at this obs) and the bools `is_first`, `is_last`, `is_terminal`.
  Keys starting with `log/` are optional per-step diagnostics (scalars); they
  are reported per episode and never stored in the replay.
- `step` takes an action in batch format: a float32 one-hot vector for
  `Discrete` (a plain integer index is accepted too), the flat float32 values
  for `Box`. After an `is_last` obs (and before the first `reset`), the next
  `step` starts a new episode and returns its `is_first` obs; that action is
  checked but otherwise ignored.
- `env.close()` releases the environment.

Subclassing `Env` gives all of this: a subclass sets `obs_space` and
`act_space` and implements `_reset(seed)` and `_step(action)`; `Env` checks
actions and observations and handles episode boundaries. Environments written
without `Env` are checked by wrapping them in `CheckedEnv` (`as_env` does so).
"""

import importlib
import numbers

import numpy as np

from keras_dreamer.batch import FLAG_KEYS
from keras_dreamer.batch import LOG_PREFIX
from keras_dreamer.batch import STEP_KEYS
from keras_dreamer.spaces import Box

EXTRA_HINT = 'pip install "keras-dreamer[envs]"'


def require(module, what, hint=EXTRA_HINT):
    """Import an optional package, or fail with an error naming the extra.

    Args:
        module: name of the package to import, e.g. `"crafter"`.
        what: what needs it, for the message, e.g. `"The Crafter env"`.
        hint: the command that installs it, for the message.

    Returns:
        The imported module.

    Raises:
        ModuleNotFoundError: if the package is missing; the message names the
            `envs` extra that installs it.

    Examples:
        >>> np_module = require("numpy", "This example")
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name not in (None, module) and not module.startswith(err.name + "."):
            raise  # the package is there; one of its own imports is missing
        raise ModuleNotFoundError(
            f"{what} needs the {module!r} package, which is not installed. "
            f"Install the environment extra: {hint}",
            name=module,
        ) from err


def image_size(size):
    """Normalise an image size argument to a `(height, width)` tuple.

    Args:
        size: an int (a square image) or a pair of ints `(height, width)`.

    Returns:
        A tuple `(height, width)` of positive ints.

    Raises:
        ValueError: if `size` is not a positive int or a pair of them.

    Examples:
        >>> image_size(64)
        (64, 64)
    """
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    try:
        height, width = pair
        ok = all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0
            for d in (height, width)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"Image size must be a positive int or a pair (height, width), "
            f"got {size!r}."
        )
    return int(height), int(width)


def check_obs(obs, obs_space, source="env"):
    """Check one obs dict against the protocol and an observation space.

    Args:
        obs: the dict an env returned from `reset` or `step`.
        obs_space: the env's `obs_space` (observation keys only).
        source: how to name the env in error messages.

    Returns:
        `obs`, unchanged, so the call can wrap a return value.

    Raises:
        ValueError: naming the key, the expected and the actual dtype or
            shape, when a key is missing, unexpected or malformed.

    Examples:
        >>> from keras_dreamer.spaces import Box
        >>> space = {"image": Box((2, 2, 3), 0, 255, "uint8")}
        >>> obs = {"image": np.zeros((2, 2, 3), np.uint8),
        ...        "reward": np.float32(0), "is_first": True,
        ...        "is_last": False, "is_terminal": False}
        >>> check_obs(obs, space) is obs
        True
    """
    if not isinstance(obs, dict):
        raise ValueError(
            f"{source} must return a dict of observations, got {type(obs).__name__}."
        )
    for key, space in obs_space.items():
        if key not in obs:
            raise ValueError(
                f"{source} returned no {key!r} observation; obs_space expects "
                f"{_describe(space.dtype, space.shape)}."
            )
        _check_array(obs[key], space.dtype, space.shape, key, source, "obs_space")
    if "reward" not in obs:
        raise ValueError(f"{source} returned no 'reward'; expected a float32 scalar.")
    _check_array(obs["reward"], np.float32, (), "reward", source, "the protocol")
    for key in FLAG_KEYS:
        if not isinstance(obs.get(key), (bool, np.bool_)):
            raise ValueError(
                f"{source} returned {key!r} = {obs.get(key)!r}; expected a bool."
            )
    for key in obs:
        if key not in obs_space and key not in STEP_KEYS:
            if not key.startswith(LOG_PREFIX):
                raise ValueError(
                    f"{source} returned the key {key!r}, which is not in its "
                    f"obs_space {sorted(obs_space)} (diagnostic keys must start "
                    f"with {LOG_PREFIX!r})."
                )
            if np.ndim(obs[key]) != 0:
                raise ValueError(
                    f"{source} returned {key!r} with shape {np.shape(obs[key])}; "
                    "log/ keys must be scalars."
                )
    return obs


def _describe(dtype, shape):
    return f"dtype {np.dtype(dtype).name} and shape {tuple(shape)}"


def _check_array(value, dtype, shape, key, source, what):
    actual_dtype = getattr(value, "dtype", None)
    actual_shape = getattr(value, "shape", None)
    if actual_dtype != dtype or actual_shape != shape:
        actual = (
            _describe(actual_dtype, actual_shape)
            if actual_dtype is not None and actual_shape is not None
            else f"a {type(value).__name__}"
        )
        raise ValueError(
            f"{source} returned {key!r} with {actual}; {what} expects "
            f"{_describe(dtype, shape)}."
        )


def native_action(act_space, action, source="env"):
    """Check an action in batch format and convert it for the environment.

    Args:
        act_space: a `Discrete` or `Box`.
        action: a one-hot vector or an int index (`Discrete`); the values,
            flat or in the space's shape (`Box`).
        source: how to name the env in error messages.

    Returns:
        An `int` index for `Discrete`; a float32 array of the space's shape
        for `Box`.

    Raises:
        ValueError: if the action lies outside the space.

    Examples:
        >>> from keras_dreamer.spaces import Discrete
        >>> native_action(Discrete(3), [0.0, 0.0, 1.0])
        2
    """
    try:
        if act_space.discrete:
            return act_space.index(action)
        array = np.asarray(action, np.float32)
        if array.shape == (act_space.width,) and act_space.shape != array.shape:
            array = array.reshape(act_space.shape)
        return act_space.encode(array).reshape(act_space.shape)
    except ValueError as err:
        raise ValueError(f"{source}.step: {err}") from None


class Env:
    """Base class for environments: checks and episode boundaries.

    A subclass sets `self.obs_space` (a dict of observation keys to spaces)
    and `self.act_space`, and implements:

    - `_reset(seed)`: start an episode (reseeding when `seed` is not None) and
      return a dict of the observation keys (plus optional `log/` scalars).
    - `_step(action)`: advance one step and return
      `(obs, reward, terminal, truncated)`, where `obs` is as in `_reset`,
      `terminal` means the episode ended for good (e.g. death) and
      `truncated` that it was cut (e.g. a time limit). The action arrives
      checked: an `int` index for `Discrete`, a float32 array of the space's
      shape for `Box`.

    Examples:
        >>> import keras_dreamer as kd
        >>> env = kd.envs.make("default", size=16, seed=0)
        >>> obs = env.reset()
        >>> obs["is_first"], obs["image"].shape
        (True, (16, 16, 3))
        >>> obs = env.step(env.act_space.encode(1))
        >>> bool(obs["is_first"])
        False
    """

    obs_space = None  # set by subclasses: {key: Box or Discrete}
    act_space = None  # set by subclasses: Discrete or Box
    _needs_reset = True

    def reset(self, seed=None):
        """Start a new episode.

        Args:
            seed: optional int; reseeds the environment's randomness. With
                `None` the environment continues its own random stream, so a
                seeded env stays deterministic across episodes.

        Returns:
            The first obs of the episode (`is_first=True`, `reward=0`).
        """
        obs = self._reset(seed)
        self._needs_reset = False
        return self._finish(obs, 0.0, first=True, last=False, terminal=False)

    def step(self, action):
        """Act once, or start a new episode after the last one ended.

        Args:
            action: one action in batch format (a one-hot vector or an int
                index for `Discrete`; the values for `Box`).

        Returns:
            The next obs dict.

        Raises:
            ValueError: if `action` lies outside `act_space`.
        """
        native = self._native_action(action)
        if self._needs_reset:
            return self.reset()
        obs, reward, terminal, truncated = self._step(native)
        last = bool(terminal or truncated)
        self._needs_reset = last
        return self._finish(obs, reward, first=False, last=last, terminal=terminal)

    def close(self):
        """Release the environment's resources (nothing by default)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _reset(self, seed):
        raise NotImplementedError

    def _step(self, action):
        raise NotImplementedError

    def _native_action(self, action):
        return native_action(self.act_space, action, type(self).__name__)

    def _finish(self, obs, reward, first, last, terminal):
        obs = dict(obs)
        obs["reward"] = np.float32(reward)
        obs["is_first"] = bool(first)
        obs["is_last"] = bool(last)
        obs["is_terminal"] = bool(terminal)
        return check_obs(obs, self.obs_space, type(self).__name__)


class CheckedEnv:
    """Wraps any object that follows the env protocol and checks it.

    Actions are checked against `act_space` before they reach the env, every
    obs is checked against `obs_space`, and the episode boundaries are
    enforced: the obs after `reset` and after an `is_last` obs must be
    `is_first`.

    Args:
        env: an object with `obs_space`, `act_space`, `reset`, `step` (and
            optionally `close`).

    Examples:
        >>> import keras_dreamer as kd
        >>> env = CheckedEnv(kd.envs.make("default", size=16))
        >>> bool(env.reset(seed=1)["is_first"])
        True
    """

    def __init__(self, env):
        for name in ("obs_space", "act_space", "reset", "step"):
            if not hasattr(env, name):
                raise ValueError(
                    f"{type(env).__name__} does not follow the env protocol: it "
                    f"has no {name!r}."
                )
        self.env = env
        self.obs_space = dict(env.obs_space)
        self.act_space = env.act_space
        self._name = type(env).__name__
        self._expect_first = True

    def reset(self, seed=None):
        """Reset the wrapped env and check its first obs (see `Env.reset`)."""
        self._expect_first = True
        return self._check(self.env.reset(seed=seed))

    def step(self, action):
        """Check `action`, step the wrapped env and check its obs."""
        native_action(self.act_space, action, self._name)
        return self._check(self.env.step(action))

    def close(self):
        """Close the wrapped env, if it can be closed."""
        close = getattr(self.env, "close", None)
        if close is not None:
            close()

    def _check(self, obs):
        check_obs(obs, self.obs_space, self._name)
        if self._expect_first and not obs["is_first"]:
            raise ValueError(
                f"{self._name} must return an is_first obs after reset() and "
                "after an is_last obs."
            )
        self._expect_first = bool(obs["is_last"])
        return obs


def as_env(env):
    """Return `env` itself if it is an `Env`, else `CheckedEnv(env)`.

    Args:
        env: an environment following the protocol.

    Returns:
        An environment whose actions and observations are checked.

    Examples:
        >>> import keras_dreamer as kd
        >>> env = kd.envs.make("default", size=16)
        >>> as_env(env) is env
        True
    """
    return env if isinstance(env, (Env, CheckedEnv)) else CheckedEnv(env)


def image_box(height, width, channels):
    """The `Box` of uint8 images of the given size.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        channels: 1 for grayscale, 3 for RGB.

    Returns:
        `Box((height, width, channels), 0, 255, "uint8")`.

    Examples:
        >>> image_box(64, 64, 3)
        Box((64, 64, 3), 0.0, 255.0, uint8)
    """
    return Box((height, width, channels), 0, 255, "uint8")
