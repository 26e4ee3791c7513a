"""Crafter adapter (needs the `envs` extra: the `crafter` package)."""

import numpy as np

from keras_dreamer.envs.base import Env
from keras_dreamer.envs.base import image_box
from keras_dreamer.envs.base import image_size
from keras_dreamer.envs.base import require
from keras_dreamer.spaces import Discrete

ACHIEVEMENT_PREFIX = "log/achievement_"


class Crafter(Env):
    """The Crafter survival game (Hafner 2021) through the env protocol.

    - Observation: `{"image": uint8 (height, width, 3)}`, the local view with
      the inventory below it.
    - Actions: `Discrete(17)`.
    - Reward: Crafter's reward (+1 per achievement unlocked for the first
      time in the episode, plus the change in health / 10).
    - Episode end: terminal on death; truncated after `length` steps.
    - With `logs=True`, every obs also carries
      `log/achievement_<name>`: an int32 count of that achievement in the
      episode so far. The collector reports them per episode; the replay
      does not store them.

    Args:
        size: image size, an int or `(height, width)`; 64 as in DreamerV3.
        seed: int seed of the world generation, or None.
        area: world size in cells.
        view: visible area in cells.
        length: steps after which an episode is truncated (None: never).
        reward: False to return a zero reward (unsupervised play).
        logs: also return the `log/achievement_*` counts.

    Examples:
        >>> env = Crafter(size=64, seed=0)
        >>> env.reset()["image"].shape, env.act_space
        ((64, 64, 3), Discrete(17))
    """

    def __init__(
        self,
        size=64,
        seed=None,
        area=(64, 64),
        view=(9, 9),
        length=10000,
        reward=True,
        logs=False,
    ):
        self._crafter = require("crafter", "The Crafter env")
        height, width = image_size(size)
        self._options = dict(
            area=tuple(area),
            view=tuple(view),
            size=(width, height),
            reward=bool(reward),
            length=length,
        )
        self._logs = bool(logs)
        self._names = tuple(self._crafter.constants.achievements)
        self.obs_space = {"image": image_box(height, width, 3)}
        self.act_space = Discrete(len(self._crafter.constants.actions))
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        self._env = self._crafter.Env(seed=seed, **self._options)

    def _reset(self, seed):
        if seed is not None:
            # Crafter derives each episode's world from (seed, episode index).
            self._env = self._crafter.Env(seed=int(seed), **self._options)
        image = self._env.reset()
        return self._observe(image, {})

    def _step(self, action):
        image, reward, done, info = self._env.step(action)
        terminal = bool(done and info["discount"] == 0)
        truncated = bool(done and not terminal)
        return self._observe(image, info["achievements"]), reward, terminal, truncated

    def _observe(self, image, achievements):
        obs = {"image": image}
        if self._logs:
            for name in self._names:
                obs[ACHIEVEMENT_PREFIX + name] = np.int32(achievements.get(name, 0))
        return obs
