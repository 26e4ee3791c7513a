"""The gin-configurable factories of a training job: env, models, optimizer.

Each `@gin.configurable` here can be bound in a gin file (see `gin_configs/`
and `docs/configuration.md`); gin configures these factories, never the
Keras layers themselves.
"""

import functools

import gin

from keras_dreamer import envs
from keras_dreamer.agent import Agent
from keras_dreamer.optimizers import LaProp
from keras_dreamer.spaces import as_obs_space
from keras_dreamer.train.errors import ConfigError
from keras_dreamer.world_model import WorldModel


@gin.configurable
def make_env(name="default", **kwargs):
    """The environment, by `kd.envs.make` name.

    Args:
        name: "default" (the embedded Catch env), "crafter", "atari:<Game>",
            "gym:<id>" or "dmc:<domain>_<task>"; or a callable returning an
            env (in gin a reference, `@my_module.my_env`, after
            `import my_module`), which
            must be a picklable top-level function or class when
            `train.envs` > 1.
        **kwargs: options of the env class (e.g. `size`, `ball_size`,
            `gray`); `train` passes `seed`.

    Returns:
        An env (see `keras_dreamer.envs`).

    Examples:
        >>> env = make_env("default", size=32, seed=0)
        >>> env.obs_space["image"].shape, env.act_space
        ((32, 32, 3), Discrete(3))
    """
    if callable(name):
        return name(**kwargs)
    return envs.make(name, **kwargs)


def env_factory(**kwargs):
    """`make_env` with its gin bindings, as a picklable factory for env processes.

    Env processes do not see the parent's gin config, so the bindings of
    `make_env` are resolved here, in the parent.

    Args:
        **kwargs: arguments that take precedence over the bindings (`train`
            passes `seed`).

    Returns:
        A `functools.partial` of `kd.envs.make` (or of the callable bound to
        `make_env.name`).

    Examples:
        >>> with gin.unlock_config():
        ...     gin.bind_parameter("make_env.size", 16)
        >>> factory = env_factory(seed=3)
        >>> factory.args, sorted(factory.keywords.items())
        (('default',), [('seed', 3), ('size', 16)])
        >>> factory().obs_space["image"].shape
        (16, 16, 3)
        >>> gin.clear_config()
    """
    bindings = {**gin.get_bindings(make_env), **kwargs}
    name = bindings.pop("name", "default")
    if callable(name):
        return functools.partial(name, **bindings)
    return functools.partial(envs.make, name, **bindings)


@gin.configurable
def make_world_model(
    obs_space, act_space, preset="debug", obs_space_check=None, **overrides
):
    """The world model for an env's spaces.

    Args:
        obs_space: the env's observation space.
        act_space: the env's action space.
        preset: a `kd.presets` name.
        obs_space_check: optional dict of key -> shape the config expects;
            a mismatch with the env is a configuration error.
        **overrides: any `kd.presets.DEFAULTS` hyperparameter, plus `dtype`
            (e.g. "mixed_bfloat16") and `seed`.

    Returns:
        A `kd.WorldModel` (not compiled).

    Raises:
        ConfigError: the env's observation space differs from
            `obs_space_check`.

    Examples:
        >>> from keras_dreamer.spaces import Discrete
        >>> model = make_world_model({"image": (16, 16, 3)}, Discrete(3), mults=(4, 4))
        >>> model.config["deter"], model.config["mults"]
        (8, (4, 4))
    """
    if obs_space_check is not None:
        expected = {k: as_obs_space(v, k) for k, v in obs_space_check.items()}
        actual = {k: as_obs_space(v, k) for k, v in obs_space.items()}
        if expected != actual:
            raise ConfigError(
                f"The config's observation space {expected} does not match the "
                f"env's {actual}."
            )
    return WorldModel(obs_space, act_space, preset=preset, **overrides)


@gin.configurable
def make_agent(obs_space, act_space, seed=None, **agent_overrides):
    """The agent for an env's spaces, around `make_world_model`'s world model.

    The world model is built by `make_world_model` with its bindings
    (preset, sizes, `dtype`, `obs_space_check`), so one gin file sizes a
    world-model run and an agent run alike; `make_agent` binds the
    actor-critic, whose width follows the world model's preset.

    Args:
        obs_space: the env's observation space.
        act_space: the env's action space.
        seed: seed of the world model's and the agent's noise.
        **agent_overrides: any `kd.presets.AGENT_DEFAULTS` hyperparameter
            (e.g. `actent`, `imag_length`, `eval_mode`) and `loss_scales`
            with `policy`, `value`, `repval`.

    Returns:
        A `kd.Agent` (not compiled).

    Raises:
        ConfigError: see `make_world_model`.

    Examples:
        >>> from keras_dreamer.spaces import Discrete
        >>> agent = make_agent({"image": (64, 64, 3)}, Discrete(3), actent=1e-2)
        >>> agent.agent_config["actent"], agent.world_model.config["deter"]
        (0.01, 8)
    """
    world_model = make_world_model(obs_space, act_space, seed=seed)
    return Agent(
        obs_space, act_space, seed=seed, world_model=world_model, **agent_overrides
    )


@gin.configurable
def make_optimizer(
    learning_rate=4e-5, warmup=1000, agc=0.3, beta_1=0.9, beta_2=0.999, epsilon=1e-20
):
    """DreamerV3's LaProp optimizer (see `kd.optimizers.LaProp`).

    Args:
        learning_rate: the rate after the warm-up.
        warmup: steps of the linear warm-up from 0.
        agc: adaptive gradient clipping threshold (0 disables it).
        beta_1: momentum decay.
        beta_2: second-moment decay.
        epsilon: added to the RMS.

    Returns:
        A `kd.optimizers.LaProp`.

    Examples:
        >>> make_optimizer(learning_rate=1e-3).agc
        0.3
    """
    return LaProp(
        learning_rate=learning_rate,
        warmup=warmup,
        agc=agc,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
    )
