"""The gin-configured training job: env -> replay -> `Agent.fit` -> logs.

`train()` runs the whole job in a logdir and resumes from the logdir's latest
checkpoint when there is one. Every function here marked `@gin.configurable`
can be bound in a gin file (see `gin_configs/` and `docs/configuration.md`);
gin configures these factories, never the Keras layers themselves.

Run it with `keras-dreamer train --logdir DIR [--gin_file F] [--gin_param B]`
or `python -m keras_dreamer.train ...` (see `keras_dreamer.train.command`), which set
the backend before this module (and Keras) is imported.
"""

import contextlib
import functools
import json
import math
import os
import time

import gin
import keras
import numpy as np

from keras_dreamer import checkpoint
from keras_dreamer import distribute
from keras_dreamer import envs
from keras_dreamer.agent import Agent
from keras_dreamer.callbacks import DreamerReportCallback
from keras_dreamer.data import Collector
from keras_dreamer.data import Evaluator
from keras_dreamer.data import RandomPolicy
from keras_dreamer.data import Replay
from keras_dreamer.logger import check_logdir
from keras_dreamer.logger import make_output
from keras_dreamer.logger import truncate_jsonl
from keras_dreamer.logger.outputs import TensorBoardOutput
from keras_dreamer.logger.outputs import TerminalOutput
from keras_dreamer.optimizers import LaProp
from keras_dreamer.spaces import as_obs_space
from keras_dreamer.train import progress
from keras_dreamer.world_model import WorldModel

# DreamerV3's terminal filter: scores, lengths, speeds and the train losses.
TERMINAL_PATTERN = r"score|length|fps|ratio|train/loss"


class ConfigError(ValueError):
    """A configuration that cannot run (reported in one line, exit code 2).

    Examples:
        >>> import tempfile
        >>> try:
        ...     train(logdir=tempfile.mkdtemp(), steps=10, steps_per_epoch=3)
        ... except ConfigError as error:
        ...     print(str(error).splitlines()[0])  # gin adds a line naming `train`
        train.steps=10 must be a multiple of train.steps_per_epoch=3.
    """


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


@gin.configurable
def train(
    logdir=gin.REQUIRED,
    steps=2000,
    batch_size=16,
    batch_length=64,
    train_ratio=32.0,
    replay_capacity=1_000_000,
    prefill=None,
    steps_per_epoch=100,
    log_every=100,
    report_every=1000,
    report_batch=6,
    report_length=32,
    save_every=1000,
    outputs=("terminal", "jsonl", "scores", "tensorboard"),
    terminal_pattern=TERMINAL_PATTERN,
    seed=0,
    jit_compile="auto",
    verbose="auto",
    agent=True,
    eval_every=None,
    eval_episodes=1,
    envs=1,
    env_timeout=60.0,
    env_standby=0,
    distribution=None,
):
    """Trains the agent (or a world model) on an environment, resuming from `logdir`.

    Args:
        logdir: the run directory (created; resumed if it holds a checkpoint).
        steps: total train steps (updates) of the run.
        batch_size: sequences per batch (B).
        batch_length: steps per sequence (T).
        train_ratio: replayed steps per env step (DreamerV3's `train_ratio`).
        replay_capacity: replay size in steps.
        prefill: env steps collected before training (default: one batch).
        steps_per_epoch: train steps per Keras epoch (one progress bar);
            must divide `steps` and `save_every`.
        log_every: train steps between metric writes.
        report_every: train steps between open-loop reports (None: off).
        report_batch: sequences shown in a report video.
        report_length: steps per report sequence (observe half, imagine half).
        save_every: train steps between checkpoints.
        outputs: logger outputs ("terminal", "jsonl", "scores",
            "tensorboard", "wandb", "mlflow", "media").
        terminal_pattern: regex of the keys the terminal shows.
        seed: seed of the env, replay, policy and model.
        jit_compile: `Model.compile(jit_compile=...)`.
        verbose: "auto": Keras's progress bar when stdout is a terminal,
            else (a batch job, `nohup`, a pipe) one plain line per
            `log_every` steps instead (`progress.ProgressLines`); "lines":
            always those lines; 0, 1, 2: `fit`'s own setting.
        agent: train `kd.Agent` (`make_agent`), whose policy collects the
            data; False trains only `make_world_model` on a random policy.
        eval_every: train steps between evaluations (None: off): whole
            episodes on a separate env (`make_env` with another seed) played
            by the agent's eval policy (the random policy without an agent),
            logged as `eval/episode/{score,length}`.
        eval_episodes: episodes per evaluation.
        envs: training envs. 1 steps the env in this process; N > 1 runs
            N envs, each in its own process (`kd.envs.ProcessEnvs`),
            stepped at once with one batched policy call per step.
        env_timeout: seconds an env process may take for one step before
            it counts as hung and is restarted (with `envs` > 1).
        env_standby: extra env processes that reset ahead (`ProcessEnvs`'s
            `standby`): an env whose episode ended continues from one of
            them at once instead of waiting for its own reset. For envs
            with slow resets (Crafter); > 0 runs the envs in processes even
            with `envs` = 1.
        distribution: data parallel over devices (see
            `keras_dreamer.distribute.make_distribution`): None (one device;
            every device when several processes run), `'data_parallel'`
            (every device of every process) or an int N (N devices per
            process). The global `batch_size` is split over them. Several
            processes (`keras.distribution.initialize`'s
            `KERAS_DISTRIBUTION_*` environment variables, or the command's
            `--job_addresses`, `--num_processes`, `--process_id`) each collect
            into their own replay and feed `batch_size / processes`
            sequences; only process 0 writes `logdir`. JAX only.

    Returns:
        A dict summary: `step` (the global step reached), `start_step` (the
        step resumed from), `seconds`, `losses` (the last epoch's train
        losses), `logdir`, `stopped` (True if a non-finite loss stopped
        training), `process` and `processes` (this process's index, the
        process count).

    Raises:
        ConfigError: a setting that cannot run, found before any step.

    Examples:
        Two updates of the debug config, as `keras-dreamer train --gin_file
        debug.gin` runs them:

        >>> import gin, tempfile
        >>> from keras_dreamer.train.command import resolve_gin_file
        >>> _ = gin.parse_config_file(resolve_gin_file("debug.gin"))
        >>> _ = gin.parse_config(["train.steps = 2", "train.report_every = None"])
        >>> logdir = tempfile.mkdtemp()
        >>> result = train(logdir=logdir)
        >>> result["step"], sorted(os.listdir(logdir))[:3]
        (2, ['ckpt', 'config.gin', 'events.out.tfevents...'])
        >>> gin.clear_config()
    """
    logdir = os.path.abspath(os.fspath(logdir))
    if isinstance(envs, bool) or not isinstance(envs, int) or envs < 1:
        raise ConfigError(f"train.envs must be an int >= 1, got {envs!r}.")
    if (
        isinstance(env_standby, bool)
        or not isinstance(env_standby, int)
        or env_standby < 0
    ):
        raise ConfigError(
            f"train.env_standby must be an int >= 0, got {env_standby!r}."
        )
    if (
        isinstance(env_timeout, bool)
        or not isinstance(env_timeout, (int, float))
        or not 0 < env_timeout < math.inf
    ):
        raise ConfigError(
            f"train.env_timeout must be a number of seconds > 0, got {env_timeout!r}."
        )
    for name, value in (("eval_every", eval_every), ("eval_episodes", eval_episodes)):
        if value is None and name == "eval_every":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            allowed = " or None" if name == "eval_every" else ""
            raise ConfigError(
                f"train.{name} must be a positive int{allowed}, got {value!r}."
            )
    try:
        fit_verbose, progress_lines = progress.fit_verbosity(verbose)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    previous = distribute.current()
    try:
        distribute.initialize()
        distribute.set_distribution(distribution)
        run = _setup(
            logdir,
            steps,
            steps_per_epoch,
            save_every,
            seed,
            batch_size,
            batch_length,
            train_ratio,
            replay_capacity,
            prefill,
            jit_compile,
            agent,
            envs,
            env_timeout,
            env_standby,
        )
        chief = distribute.is_chief()
        # Only the chief evaluates (and writes): the others just train.
        evaluator = _evaluator(run, seed, eval_every, eval_episodes) if chief else None
    except ConfigError:
        _restore_distribution(previous)
        raise
    except distribute.DistributionError as error:
        _restore_distribution(previous)
        raise ConfigError(str(error)) from error
    except (ValueError, TypeError, ImportError, OSError) as error:
        _restore_distribution(previous)
        # Anything that fails before the first step is a configuration problem.
        raise ConfigError(f"{type(error).__name__}: {error}") from error
    model, collector, replay, start_step, resumed = run
    callbacks = [_SummaryLogs()]
    if not chief:  # the others never touch the logdir; their episode stats go
        callbacks.append(_DrainMetrics(collector))
    else:
        callbacks += _writers_or_close(
            collector,
            evaluator,
            previous,
            logdir,
            run,
            agent,
            outputs,
            terminal_pattern,
            log_every,
            report_every,
            report_batch,
            report_length,
            save_every,
            evaluator,
            eval_every,
        )
        if progress_lines:
            callbacks.append(
                progress.ProgressLines(steps, log_every or steps_per_epoch)
            )
    summary = callbacks[0]
    started = time.time()
    try:
        model.fit(
            collector,
            steps_per_epoch=steps_per_epoch,
            epochs=steps // steps_per_epoch,
            initial_epoch=start_step // steps_per_epoch,
            callbacks=callbacks,
            verbose=fit_verbose if chief else 0,
            shuffle=False,
        )
    finally:
        collector.close()
        if evaluator is not None:
            evaluator.close()
        _restore_distribution(previous)
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    result = {
        "step": step,
        "start_step": start_step,
        "seconds": time.time() - started,
        "losses": summary.losses,
        "logdir": logdir,
        "stopped": bool(model.stop_training),
        "process": distribute.process_index(),
        "processes": distribute.process_count(),
    }
    return result


def _writers_or_close(collector, evaluator, previous, *args):
    """`_writers`; if one cannot be built, the envs are closed first."""
    try:
        return _writers(*args)
    except BaseException:
        collector.close()
        if evaluator is not None:
            evaluator.close()
        _restore_distribution(previous)
        raise


def _restore_distribution(previous):
    if distribute.current() is not previous:
        keras.distribution.set_distribution(previous)


def _writers(
    logdir,
    run,
    agent,
    outputs,
    terminal_pattern,
    log_every,
    report_every,
    report_batch,
    report_length,
    save_every,
    evaluator,
    eval_every,
):
    """The callbacks that write the logdir: the logger and the checkpointer."""
    _, collector, replay, start_step, resumed = run
    callback = DreamerReportCallback(
        logdir,
        outputs=_outputs(outputs, logdir, terminal_pattern, start_step),
        log_every=log_every,
        report_every=report_every,
        report_data=(lambda: replay.sample(report_batch, report_length))
        if report_every
        else None,
        train_data=collector,
        report_at_start=not resumed,
        evaluator=evaluator,
        eval_every=eval_every if evaluator is not None else None,
    )
    saver = checkpoint.Checkpointer(
        os.path.join(logdir, "ckpt"),
        save_every,
        state_fn=lambda: _run_state(collector, agent),
        replay=replay,
    )
    return [callback, saver]


def _setup(logdir, steps, steps_per_epoch, save_every, *args):
    """Builds (or restores) everything a run needs, before any step is trained.

    In a multi-process run the chief (process 0) alone reads and writes the
    logdir: it finds the checkpoint and the others learn its step; after
    every process built its part, the chief's restored weights and optimizer
    state go to all. Each stage ends with every process learning whether
    all succeeded, so a failure in one stops all of them with an error
    instead of leaving the others waiting.
    """
    _check_run_settings(steps, steps_per_epoch, save_every)
    ckpt_dir = os.path.join(logdir, "ckpt")
    resume, state = None, {}
    with _all_processes("reading the logdir"):
        if distribute.is_chief():
            prepare_logdir(logdir)
            resume = checkpoint.latest(ckpt_dir)
            state = checkpoint.read_state(resume) if resume is not None else {}
            _check_process_count(state, resume)
    start_step, resumed = (
        int(x)
        for x in distribute.broadcast_from_chief(
            np.int32([state.get("step", 0), resume is not None])
        )
    )
    with _all_processes("setting up the run"):
        run, restored = _build_run(logdir, ckpt_dir, resume, state, start_step, *args)
    if resumed:  # the others get the weights and optimizer state the chief read
        distribute.sync_from_chief(run[0], restored)
    run[1].prefill_replay()
    return run


@contextlib.contextmanager
def _all_processes(what):
    """Runs a block in every process; raises everywhere if it failed anywhere."""
    if distribute.process_count() == 1:
        yield
        return
    error = None
    try:
        yield
    except Exception as caught:  # every process must reach the gather below
        error = caught
    failed = [
        i for i, ok in enumerate(distribute.gather(np.int32(error is None))) if not ok
    ]
    if error is not None:
        raise error
    if failed:
        raise ConfigError(
            f"Process(es) {failed} failed while {what} (see their error); this "
            f"process ({distribute.process_index()}) stops too."
        )


def _check_process_count(state, resume):
    saved = int(state.get("num_processes", 1))
    count = distribute.process_count()
    if resume is not None and saved != count:
        raise ConfigError(
            f"The checkpoint {resume} was written by a run of {saved} "
            f"process(es), this run has {count}: resume with {saved} processes "
            "(each keeps its own replay and share of the batch), or use a new "
            "logdir."
        )


def _build_run(
    logdir,
    ckpt_dir,
    resume,
    state,
    start_step,
    seed,
    batch_size,
    batch_length,
    train_ratio,
    replay_capacity,
    prefill,
    jit_compile,
    agent,
    num_envs=1,
    env_timeout=60.0,
    env_standby=0,
):
    """Builds everything in this process; `resume` is None except in the chief.

    Returns the run and, in the chief of a multi-process run that resumes,
    the checkpoint's state values for `distribute.sync_from_chief`.
    """
    # This process's share of the global batch, and its data seed (envs,
    # replay, policy noise); model weights and noise keep the run's seed.
    try:
        batch_size = distribute.local_batch_size(batch_size)
    except distribute.DistributionError as error:
        raise ConfigError(str(error)) from None
    model_seed, seed = seed, distribute.process_seed(seed)
    keras.utils.set_random_seed(model_seed + start_step)
    env = make_env(seed=seed)
    replay = Replay(replay_capacity, seed=seed)
    if resume is not None:
        replay.load(os.path.join(ckpt_dir, checkpoint.REPLAY_DIR), strict=False)
        check_resumed_spaces(env, state, replay.metadata, resume)
    if num_envs > 1 or env_standby:
        # The parent's env gave the spaces (and gin's record of make_env);
        # the training envs run in their own processes.
        env.close()
        collect_env = envs.ProcessEnvs(
            env_factory(seed=seed),
            num_envs,
            seed=[seed, start_step, 2],
            timeout=env_timeout,
            standby=env_standby,
        )
    else:
        collect_env = env
    try:
        collector = Collector(
            collect_env,
            replay=replay,
            batch_size=batch_size,
            batch_length=batch_length,
            train_ratio=train_ratio,
            prefill=prefill,
            # A resumed run starts new episodes, not the first ones again.
            seed=[seed, start_step] if start_step else seed,
        )
    except BaseException:
        collect_env.close()
        raise
    try:
        return _finish_setup(
            logdir,
            env,
            collector,
            replay,
            resume,
            state,
            start_step,
            seed,
            model_seed,
            jit_compile,
            agent,
        )
    except BaseException:
        collector.close()
        raise


def _finish_setup(
    logdir,
    env,
    collector,
    replay,
    resume,
    state,
    start_step,
    seed,
    model_seed,
    jit_compile,
    agent,
):
    kind = _model_kind(agent)
    if resume is not None and state.get("model", "world_model") != kind:
        raise ConfigError(
            f"train.agent={agent} asks for a {kind.replace('_', '-')} run, but the "
            f"checkpoint {resume} holds a {state.get('model', 'world_model')} "
            "run. Use a new logdir or set train.agent to match."
        )
    if agent:
        model = make_agent(env.obs_space, env.act_space, seed=model_seed)
        collector.policy = model.policy
        if seed != model_seed:  # its own action noise in every process
            model.policy.set_state(_rng_state([seed, start_step]))
    else:
        model = make_world_model(env.obs_space, env.act_space, seed=model_seed)
    model.compile(optimizer=make_optimizer(), jit_compile=jit_compile)
    restored = None
    if resume is not None:
        restored = distribute.restore_checkpoint(resume, model, checkpoint.restore)
        collector.env_steps = int(state.get("env_steps", 0))
        if "policy_rng" in state and hasattr(collector.policy, "set_state"):
            collector.policy.set_state(state["policy_rng"])
    if distribute.is_chief():
        drop_unsaved_lines(logdir, start_step if resume is not None else None)
        write_operative_config(logdir)
    return (model, collector, replay, start_step, resume is not None), restored


def _rng_state(seed):
    return np.random.default_rng(seed).bit_generator.state


def _evaluator(run, seed, eval_every, eval_episodes):
    """The evaluation episodes' player, or None when `eval_every` is off."""
    if eval_every is None:
        return None
    model, collector, _, start_step, _ = run
    # Another seed than the training env's; a resumed run plays new episodes.
    eval_seed = int(np.random.SeedSequence([seed, 1, start_step]).generate_state(1)[0])
    env = make_env(seed=eval_seed)
    if isinstance(model, Agent):
        policy = model.make_policy("eval", seed=eval_seed)
    else:
        policy = RandomPolicy(env.act_space, seed=eval_seed)
    return Evaluator(env, policy, episodes=eval_episodes, seed=eval_seed)


def check_resumed_spaces(env, state, metadata, path):
    """Raises `ConfigError` naming each key where `env` differs from a checkpoint.

    The spaces of the checkpointed run come from its state (`obs_space`,
    `act_space`), else from its replay's metadata; without either nothing is
    checked.

    Args:
        env: the env of the resumed run.
        state: the checkpoint's state dict.
        metadata: the loaded replay's metadata.
        path: the checkpoint directory (named in the error).

    Raises:
        ConfigError: an observation key is missing, extra or of another
            space, or the action space differs.

    Examples:
        >>> env = make_env("default", size=16)
        >>> saved = {"obs_space": {"image": {"class_name": "Box",
        ...     "shape": [32, 32, 3], "low": 0.0, "high": 255.0, "dtype": "uint8"}}}
        >>> try:
        ...     check_resumed_spaces(env, saved, {}, "ckpt/0000000500")
        ... except ConfigError as error:
        ...     print(str(error).split(": ", 1)[1][:19])
        observation 'image'
    """
    saved_obs = state.get("obs_space", metadata.get("obs_space"))
    saved_act = state.get("act_space", metadata.get("act_space"))
    problems = []
    if saved_obs is not None:
        current = {k: space.get_config() for k, space in env.obs_space.items()}
        for key in sorted(set(saved_obs) | set(current)):
            if key not in current:
                problems.append(
                    f"observation {key!r} is missing (was {saved_obs[key]})"
                )
            elif key not in saved_obs:
                problems.append(f"observation {key!r} is new ({current[key]})")
            elif _normal(saved_obs[key]) != _normal(current[key]):
                problems.append(
                    f"observation {key!r} is {current[key]}, was {saved_obs[key]}"
                )
    if saved_act is not None:
        current = env.act_space.get_config()
        if _normal(saved_act) != _normal(current):
            problems.append(f"'action' space is {current}, was {saved_act}")
    if problems:
        raise ConfigError(
            f"The env does not match the checkpoint {path}: {'; '.join(problems)}. "
            "Resume with the env settings of that run, or use a new logdir."
        )


def _normal(config):
    """A space config with tuples as lists, as JSON gives it back."""
    return json.loads(json.dumps(config))


def _model_kind(agent):
    return "agent" if agent else "world_model"


def _run_state(collector, agent):
    state = {
        "env_steps": int(collector.env_steps),
        "model": _model_kind(agent),
        "obs_space": {k: s.get_config() for k, s in collector.obs_space.items()},
        "act_space": collector.act_space.get_config(),
        "num_processes": distribute.process_count(),
    }
    if hasattr(collector.policy, "get_state"):
        state["policy_rng"] = collector.policy.get_state()
    return state


def drop_unsaved_lines(logdir, checkpoint_step):
    """Drops the log lines that a resumed run will write again.

    Lines above the checkpoint's step were written by the interrupted run
    and come again after the restore; with no checkpoint (`None`) nothing is
    restored, so every line goes (a run killed before its first checkpoint
    starts over, and its step-0 lines are not written twice).

    Args:
        logdir: the run directory.
        checkpoint_step: the step of the restored checkpoint, or None.

    Examples:
        >>> import tempfile
        >>> logdir = tempfile.mkdtemp()
        >>> with open(os.path.join(logdir, "metrics.jsonl"), "w") as f:
        ...     _ = f.write('{"step": 0}\\n{"step": 5}\\n')
        >>> drop_unsaved_lines(logdir, None)
        >>> open(os.path.join(logdir, "metrics.jsonl")).read()
        ''
    """
    keep_until = -1 if checkpoint_step is None else int(checkpoint_step)
    for name in ("metrics.jsonl", "scores.jsonl"):
        truncate_jsonl(os.path.join(logdir, name), keep_until)


def prepare_logdir(logdir):
    """Creates `logdir`, or raises `ConfigError` if it cannot be a run directory.

    Args:
        logdir: the run directory.

    Raises:
        ConfigError: `logdir` is a file, cannot be created or is not
            writable.

    Examples:
        >>> import tempfile
        >>> path = tempfile.mkstemp()[1]  # a file, not a directory
        >>> try:
        ...     prepare_logdir(path)
        ... except ConfigError as error:
        ...     print(error)  # doctest: +ELLIPSIS
        logdir '...' exists and is not a directory.
    """
    try:
        check_logdir(logdir)
    except OSError as error:
        raise ConfigError(str(error)) from None


def write_operative_config(logdir):
    """Writes gin's operative config (every configurable that ran) atomically.

    Args:
        logdir: the run directory; the file is `logdir/config.gin`.

    Examples:
        >>> import tempfile
        >>> logdir = tempfile.mkdtemp()
        >>> write_operative_config(logdir)
        >>> os.listdir(logdir)
        ['config.gin']
    """
    path = os.path.join(logdir, "config.gin")
    temp = path + ".tmp"
    with open(temp, "w") as file:
        file.write(gin.operative_config_str())
    os.replace(temp, path)


def _check_run_settings(steps, steps_per_epoch, save_every):
    for name, value in (("steps", steps), ("steps_per_epoch", steps_per_epoch)):
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"train.{name} must be a positive int, got {value!r}.")
    if steps % steps_per_epoch:
        raise ConfigError(
            f"train.steps={steps} must be a multiple of train.steps_per_epoch="
            f"{steps_per_epoch}."
        )
    if save_every and save_every % steps_per_epoch:
        raise ConfigError(
            f"train.save_every={save_every} must be a multiple of "
            f"train.steps_per_epoch={steps_per_epoch} (checkpoints are taken at "
            "epoch ends)."
        )


def _outputs(names, logdir, terminal_pattern, start_step):
    built = []
    for name in names:
        key = name.strip().lower() if isinstance(name, str) else None
        try:
            if key == "terminal":
                built.append(TerminalOutput(pattern=terminal_pattern))
            elif key == "tensorboard":
                built.append(
                    TensorBoardOutput(
                        logdir, purge_step=start_step + 1 if start_step else None
                    )
                )
            else:
                built.append(make_output(name, logdir))
        except Exception as error:  # e.g. an unreachable MLflow server
            for output in built:
                output.close()
            raise ConfigError(f"output {name!r}: {error}") from error
    return built


class _DrainMetrics(keras.callbacks.Callback):
    """Drops a non-chief process's episode statistics at each epoch end (only
    the chief logs them), so they do not pile up."""

    def __init__(self, collector):
        super().__init__()
        self.collector = collector

    def on_epoch_end(self, epoch, logs=None):
        self.collector.drain_metrics()


class _SummaryLogs(keras.callbacks.Callback):
    """Keeps the last train losses for the end-of-run summary."""

    def __init__(self):
        super().__init__()
        self.losses = {}

    def on_epoch_end(self, epoch, logs=None):
        self.losses = {
            k: float(v)
            for k, v in (logs or {}).items()
            if k == "loss" or k.startswith("loss/")
        }


def summary_line(result):
    """The one-line summary printed at the end of a run.

    Args:
        result: the dict `train` returns.

    Returns:
        A string.

    Examples:
        >>> line = summary_line({"step": 1500, "start_step": 0, "seconds": 421.0,
        ...                      "losses": {"loss": 10.5, "loss/image": 3.25},
        ...                      "logdir": "runs/catch"})
        >>> print(*line.split("; ")[:2], sep="\\n")
        Trained 1,500 steps (now at step 1,500) in 7m01s
        final loss 10.5 (image 3.25)
    """
    seconds = result["seconds"]
    minutes, secs = divmod(int(round(seconds)), 60)
    losses = result["losses"]
    parts = ", ".join(
        f"{k.split('/', 1)[1]} {v:.3g}" for k, v in sorted(losses.items()) if "/" in k
    )
    loss = losses.get("loss", math.nan)
    trained = result["step"] - result["start_step"]
    process, processes = result.get("process", 0), result.get("processes", 1)
    head = f"Process {process} of {processes}: t" if processes > 1 else "T"
    if process:
        where = "process 0 writes the logs"
    else:
        where = (
            f"logs in {result['logdir']}; "
            f"view with: tensorboard --logdir {result['logdir']}"
        )
    return (
        f"{head}rained {trained:,} steps (now at step {result['step']:,}) in "
        f"{minutes}m{secs:02d}s; "
        f"final loss {loss:.4g} ({parts}); {where}"
    )
