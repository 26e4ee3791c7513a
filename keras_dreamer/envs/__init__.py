"""Environments: the env protocol, the embedded default env and adapters.

Build any env by name with `make`, so configs and users never import env
classes. See `keras_dreamer.envs.base` for the protocol.

Examples:
    >>> import keras_dreamer as kd
    >>> env = kd.envs.make("default", size=32, seed=0)
    >>> sorted(env.reset())
    ['image', 'is_first', 'is_last', 'is_terminal', 'reward']
"""

from keras_dreamer.envs.base import CheckedEnv
from keras_dreamer.envs.base import Env
from keras_dreamer.envs.base import as_env
from keras_dreamer.envs.base import check_obs
from keras_dreamer.envs.catch import Catch
from keras_dreamer.envs.crafter import Crafter
from keras_dreamer.envs.dmc import DMC
from keras_dreamer.envs.gym import Atari
from keras_dreamer.envs.gym import Gym
from keras_dreamer.envs.parallel import EnvProcessError
from keras_dreamer.envs.parallel import EnvRestartWarning
from keras_dreamer.envs.parallel import ProcessEnvs

NAMES = (
    "'default' (the embedded Catch env; also 'catch')",
    "'crafter'",
    "'atari:<Game>' (e.g. 'atari:Pong')",
    "'gym:<id>' (e.g. 'gym:CartPole-v1')",
    "'dmc:<domain>_<task>' (e.g. 'dmc:walker_walk')",
)

__all__ = [
    "Atari",
    "Catch",
    "CheckedEnv",
    "Crafter",
    "DMC",
    "Env",
    "EnvProcessError",
    "EnvRestartWarning",
    "Gym",
    "ProcessEnvs",
    "as_env",
    "check_obs",
    "make",
]


def make(name, **kwargs):
    """Build an environment by name.

    Args:
        name: `"default"` (or `"catch"`) for the embedded `Catch` env,
            `"crafter"`, `"atari:<Game>"` (e.g. `"atari:Pong"`),
            `"gym:<id>"` (any Gymnasium id, e.g. `"gym:CartPole-v1"`) or
            `"dmc:<domain>_<task>"` (a DeepMind Control Suite task, e.g.
            `"dmc:walker_walk"`).
        **kwargs: options of the env class (`Catch`, `Crafter`, `Atari`,
            `Gym`, `DMC`), e.g. `size=64`, `seed=0`.

    Returns:
        An `Env`.

    Raises:
        ValueError: for an unknown name; the message lists the valid forms.
        ModuleNotFoundError: when the env needs a package of the `envs`
            (or `dmc`) extra that is not installed.

    Examples:
        >>> env = make("default", size=16, lives=1, seed=3)
        >>> env.act_space
        Discrete(3)
    """
    if isinstance(name, str):
        if name in ("default", "catch"):
            return Catch(**kwargs)
        if name == "crafter":
            return Crafter(**kwargs)
        kind, _, rest = name.partition(":")
        if kind == "atari" and rest:
            return Atari(rest, **kwargs)
        if kind == "gym" and rest:
            return Gym(rest, **kwargs)
        if kind == "dmc" and rest:
            return DMC(rest, **kwargs)
    raise ValueError(f"Unknown env name {name!r}. Valid names: {', '.join(NAMES)}.")
