"""Building a run: env, replay, collector and model, new or resumed.

`setup(logdir, config)` builds (or restores from the logdir's latest
checkpoint) everything a run needs before its first step and returns a
`Run`; `RunConfig` holds the settings of `train` that shape it.
"""

import dataclasses
import os

import keras
import numpy as np

from keras_dreamer import checkpoint
from keras_dreamer import distribute
from keras_dreamer import envs
from keras_dreamer.agent import Agent
from keras_dreamer.data import Collector
from keras_dreamer.data import Evaluator
from keras_dreamer.data import RandomPolicy
from keras_dreamer.data import Replay
from keras_dreamer.data import context
from keras_dreamer.data import memory
from keras_dreamer.train.errors import ConfigError
from keras_dreamer.train.factories import env_factory
from keras_dreamer.train.factories import make_agent
from keras_dreamer.train.factories import make_env
from keras_dreamer.train.factories import make_optimizer
from keras_dreamer.train.factories import make_world_model
from keras_dreamer.train.logdir import check_process_count
from keras_dreamer.train.logdir import check_resumed_spaces
from keras_dreamer.train.logdir import drop_unsaved_lines
from keras_dreamer.train.logdir import model_kind
from keras_dreamer.train.logdir import prepare_logdir
from keras_dreamer.train.logdir import write_operative_config
from keras_dreamer.train.processes import all_processes


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The settings of `train` that build a run (see `train` for each).

    Args:
        seed: seed of the env, replay, policy and model.
        batch_size: sequences per global batch.
        batch_length: steps per sequence.
        train_ratio: replayed steps per env step.
        replay_capacity: replay size in steps, or in bytes as a string
            ("8GB", "512MiB"; see `kd.data.memory.parse_bytes`).
        prefill: env steps collected before training (None: one batch).
        jit_compile: `Model.compile(jit_compile=...)`.
        agent: train an agent (else a world model on a random policy).
        envs: training envs (more than 1: each in its own process).
        env_timeout: seconds an env process may take for one step.
        env_standby: extra env processes that reset ahead.
        replay_context: 1 (DreamerV3's replay context: the replay stores
            latents, batches have a context step, posteriors are written
            back) or 0 (off).
        replay_online: newly completed windows are trained on first.

    Examples:
        >>> RunConfig(batch_size=4, agent=False).batch_size
        4
    """

    seed: int = 0
    batch_size: int = 16
    batch_length: int = 64
    train_ratio: float = 32.0
    replay_capacity: object = 1_000_000
    prefill: int = None
    jit_compile: object = "auto"
    agent: bool = True
    envs: int = 1
    env_timeout: float = 60.0
    env_standby: int = 0
    replay_context: int = 0
    replay_online: bool = False


@dataclasses.dataclass
class Run:
    """What a run trains with, built by `setup`.

    Args:
        model: the compiled `kd.Agent` or `kd.WorldModel`.
        collector: the `kd.data.Collector` that feeds `fit`.
        replay: the collector's `kd.data.Replay`.
        start_step: the train step the run starts at (0, or the
            checkpoint's).
        resumed: whether it was restored from a checkpoint.

    Examples:
        >>> Run(model=None, collector=None, replay=None, start_step=0, resumed=False)
        Run(model=None, collector=None, replay=None, start_step=0, resumed=False)
    """

    model: object
    collector: object
    replay: object
    start_step: int
    resumed: bool


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where this process starts: the checkpoint (the chief's only), its
    state and the step."""

    path: str
    state: dict
    step: int


def setup(logdir, config):
    """Builds (or restores) everything a run needs, before any step is trained.

    In a multi-process run the chief (process 0) alone reads and writes the
    logdir: it finds the checkpoint and the others learn its step; after
    every process built its part, the chief's restored weights and optimizer
    state go to all. Each stage ends with every process learning whether
    all succeeded (`processes.all_processes`).

    Args:
        logdir: the run directory (created; resumed if it holds a
            checkpoint).
        config: a `RunConfig`.

    Returns:
        A `Run`, its replay prefilled.

    Raises:
        ConfigError: a setting, the logdir or the checkpoint cannot run.

    Examples:
        >>> import tempfile
        >>> config = RunConfig(batch_size=2, batch_length=8, replay_capacity=100,
        ...                    agent=False)
        >>> run = setup(tempfile.mkdtemp(), config)
        >>> type(run.model).__name__, run.start_step, run.resumed
        ('WorldModel', 0, False)
        >>> run.collector.close()
    """
    ckpt_dir = os.path.join(logdir, "ckpt")
    resume, state = None, {}
    with all_processes("reading the logdir"):
        if distribute.is_chief():
            prepare_logdir(logdir)
            resume = checkpoint.latest(ckpt_dir)
            state = checkpoint.read_state(resume) if resume is not None else {}
            check_process_count(state, resume)
    start_step, resumed = (
        int(x)
        for x in distribute.broadcast_from_chief(
            np.int32([state.get("step", 0), resume is not None])
        )
    )
    start = _Start(resume, state, start_step)
    with all_processes("setting up the run"):
        run, restored = _build(logdir, config, start)
    run.resumed = bool(resumed)
    if resumed:  # the others get the weights and optimizer state the chief read
        distribute.sync_from_chief(run.model, restored)
    run.collector.prefill_replay()
    return run


def make_evaluator(run, config, eval_every, eval_episodes):
    """The player of the evaluation episodes, or None when `eval_every` is None.

    Its env is `make_env` with another seed than the training env's (and,
    when resumed, new episodes); it plays the agent's eval policy, or a
    random policy when the run trains a world model.

    Args:
        run: the `Run`.
        config: its `RunConfig`.
        eval_every: train steps between evaluations, or None.
        eval_episodes: episodes per evaluation.

    Examples:
        >>> make_evaluator(None, RunConfig(), eval_every=None, eval_episodes=1) is None
        True
    """
    if eval_every is None:
        return None
    seed = int(
        np.random.SeedSequence([config.seed, 1, run.start_step]).generate_state(1)[0]
    )
    env = make_env(seed=seed)
    if isinstance(run.model, Agent):
        policy = run.model.make_policy("eval", seed=seed)
    else:
        policy = RandomPolicy(env.act_space, seed=seed)
    return Evaluator(env, policy, episodes=eval_episodes, seed=seed)


def _build(logdir, config, start):
    """Builds everything in this process; `start.path` is None except in the
    chief. Returns the run and, in the chief of a multi-process run that
    resumes, the checkpoint's state values for `distribute.sync_from_chief`."""
    # This process's share of the global batch, and its data seed (envs,
    # replay, policy noise); model weights and noise keep the run's seed.
    try:
        batch_size = distribute.local_batch_size(config.batch_size)
    except distribute.DistributionError as error:
        raise ConfigError(str(error)) from None
    seed = distribute.process_seed(config.seed)
    keras.utils.set_random_seed(config.seed + start.step)
    env = make_env(seed=seed)
    try:
        model = _make_model(config, env)
        latents = context.model_latent_spec(model) if config.replay_context else None
        capacity = replay_capacity(config.replay_capacity, env, latents=latents)
    except BaseException:
        env.close()
        raise
    replay = Replay(capacity, seed=seed, latents=latents)
    if start.path is not None:
        replay.load(os.path.join(logdir, "ckpt", checkpoint.REPLAY_DIR), strict=False)
        check_resumed_spaces(env, start.state, replay.metadata, start.path)
    if config.envs > 1 or config.env_standby:
        # The parent's env gave the spaces (and gin's record of make_env);
        # the training envs run in their own processes.
        env.close()
        collect_env = envs.ProcessEnvs(
            env_factory(seed=seed),
            config.envs,
            seed=[seed, start.step, 2],
            timeout=config.env_timeout,
            standby=config.env_standby,
        )
    else:
        collect_env = env
    try:
        collector = Collector(
            collect_env,
            replay=replay,
            batch_size=batch_size,
            batch_length=config.batch_length,
            train_ratio=config.train_ratio,
            prefill=config.prefill,
            replay_context=config.replay_context,
            replay_online=config.replay_online,
            # A resumed run starts new episodes, not the first ones again.
            seed=[seed, start.step] if start.step else seed,
        )
    except BaseException:
        collect_env.close()
        raise
    run = Run(None, collector, replay, start.step, start.path is not None)
    try:
        restored = _build_model(logdir, config, start, model, run, seed)
    except BaseException:
        collector.close()
        raise
    return run, restored


def replay_capacity(capacity, env, available=None, latents=None):
    """The replay capacity in steps, checked to fit in memory.

    Args:
        capacity: `train.replay_capacity`: steps (an int) or bytes (a
            string such as "8GB").
        env: the training env (its spaces give the bytes per step).
        available: the available memory in bytes; by default
            `kd.data.memory.available_memory()`.
        latents: the stored latents with replay context
            (`kd.data.context.latent_spec`), counted per step.

    Returns:
        The capacity in steps.

    Raises:
        ConfigError: one line: a string that does not parse, or a full
            replay that does not fit (with the capacity that fits).

    Examples:
        >>> from keras_dreamer import envs
        >>> env = envs.make("default", size=16)
        >>> replay_capacity("1MB", env)
        1257
        >>> replay_capacity(10**12, env)
        Traceback (most recent call last):
        ...
        keras_dreamer.train.errors.ConfigError: a full replay of 1,000,000,000,000 steps x 795 bytes = 795 TB does not fit ...
    """  # noqa: E501
    per_step = memory.step_bytes(env.obs_space, env.act_space, latents)
    try:
        steps = memory.capacity_steps(capacity, per_step)
        memory.check_fits(
            steps,
            per_step,
            memory.available_memory() if available is None else available,
        )
    except ValueError as error:
        raise ConfigError(f"train.replay_capacity: {error}") from None
    except MemoryError as error:
        raise ConfigError(str(error)) from None
    return steps


def _make_model(config, env):
    """The agent (or world model) of the run, not compiled yet."""
    if config.agent:
        return make_agent(env.obs_space, env.act_space, seed=config.seed)
    return make_world_model(env.obs_space, env.act_space, seed=config.seed)


def _build_model(logdir, config, start, model, run, seed):
    """Compiles `model` as `run.model` (restored in the chief when resuming)."""
    kind = model_kind(config.agent)
    saved_kind = start.state.get("model", "world_model")
    if start.path is not None and saved_kind != kind:
        raise ConfigError(
            f"train.agent={config.agent} asks for a {kind.replace('_', '-')} run, "
            f"but the checkpoint {start.path} holds a {saved_kind} "
            "run. Use a new logdir or set train.agent to match."
        )
    collector = run.collector
    if config.agent:
        collector.policy = model.policy
        if seed != config.seed:  # its own action noise in every process
            model.policy.set_state(_rng_state([seed, start.step]))
    model.compile(optimizer=make_optimizer(), jit_compile=config.jit_compile)
    run.model = model
    restored = None
    if start.path is not None:
        restored = distribute.restore_checkpoint(start.path, model, checkpoint.restore)
        collector.env_steps = int(start.state.get("env_steps", 0))
        if "policy_rng" in start.state and hasattr(collector.policy, "set_state"):
            collector.policy.set_state(start.state["policy_rng"])
    if distribute.is_chief():
        drop_unsaved_lines(logdir, start.step if start.path is not None else None)
        write_operative_config(logdir)
    return restored


def _rng_state(seed):
    return np.random.default_rng(seed).bit_generator.state
