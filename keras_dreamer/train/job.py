"""The gin-configured training job: env -> replay -> `Agent.fit` -> logs.

`train()` runs the whole job in a logdir and resumes from the logdir's latest
checkpoint when there is one. Its parts, each its own module: the gin
factories (`factories`: env, models, optimizer), building the run
(`run`: a `Run` from a `RunConfig`), multi-process coordination
(`processes`) and the logdir and resume checks (`logdir`). Every function
marked `@gin.configurable` can be bound in a gin file (see `gin_configs/`
and `docs/configuration.md`); gin configures these factories, never the
Keras layers themselves.

Run it with `keras-dreamer train --logdir DIR [--gin_file F] [--gin_param B]`
or `python -m keras_dreamer.train ...` (see `keras_dreamer.train.command`), which set
the backend before this module (and Keras) is imported.
"""

import math
import os
import time

import gin
import keras

from keras_dreamer import backend
from keras_dreamer import checkpoint
from keras_dreamer import distribute
from keras_dreamer.callbacks import DreamerReportCallback
from keras_dreamer.logger import make_output
from keras_dreamer.logger.outputs import TensorBoardOutput
from keras_dreamer.logger.outputs import TerminalOutput
from keras_dreamer.logger.outputs import WandBOutput
from keras_dreamer.logger.outputs.wandb import logdir_run_id
from keras_dreamer.train import progress
from keras_dreamer.train import signals
from keras_dreamer.train.errors import ConfigError
from keras_dreamer.train.factories import env_factory
from keras_dreamer.train.factories import make_agent
from keras_dreamer.train.factories import make_env
from keras_dreamer.train.factories import make_optimizer
from keras_dreamer.train.factories import make_world_model
from keras_dreamer.train.logdir import check_resumed_spaces
from keras_dreamer.train.logdir import drop_unsaved_lines
from keras_dreamer.train.logdir import prepare_logdir
from keras_dreamer.train.logdir import run_state
from keras_dreamer.train.logdir import write_operative_config
from keras_dreamer.train.processes import DrainMetrics
from keras_dreamer.train.processes import restore_distribution
from keras_dreamer.train.run import RunConfig
from keras_dreamer.train.run import make_evaluator
from keras_dreamer.train.run import setup

# Names of the job's parts, importable from here as before the split.
__all__ = [
    "ConfigError",
    "TERMINAL_PATTERN",
    "check_resumed_spaces",
    "drop_unsaved_lines",
    "env_factory",
    "make_agent",
    "make_env",
    "make_optimizer",
    "make_world_model",
    "prepare_logdir",
    "summary_line",
    "train",
    "write_operative_config",
]

# DreamerV3's terminal filter: scores, lengths, speeds and the train losses.
TERMINAL_PATTERN = r"score|length|fps|ratio|train/loss"


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
    replay_context=1,
    replay_online=True,
):
    """Trains the agent (or a world model) on an environment, resuming from `logdir`.

    Args:
        logdir: the run directory (created; resumed if it holds a checkpoint).
        steps: total train steps (updates) of the run.
        batch_size: sequences per batch (B).
        batch_length: steps per sequence (T).
        train_ratio: replayed steps per env step (DreamerV3's `train_ratio`).
        replay_capacity: replay size in steps, or in bytes as a string
            ("8GB", "512MiB"). A full replay that would not fit in 80% of
            the available memory is refused before anything is trained
            (`run.replay_capacity`).
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
        replay_context: 1 (default, as DreamerV3): the replay stores each
            step's posterior latent, batches have one leading context step
            that starts the RSSM, and the trained steps' posteriors are
            written back after each update; 0: off (plain `[B, T]` batches).
        replay_online: True (default, as DreamerV3): each newly completed
            window of a worker is trained on first, then uniform draws.

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
    if replay_context not in (0, 1) or isinstance(replay_context, float):
        raise ConfigError(
            "train.replay_context must be 0 (off) or 1 (one context step, as "
            f"DreamerV3), got {replay_context!r}."
        )
    if not isinstance(replay_online, bool):
        raise ConfigError(
            f"train.replay_online must be True or False, got {replay_online!r}."
        )
    try:
        fit_verbose, progress_lines = progress.fit_verbosity(verbose)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    config = RunConfig(
        seed=seed,
        batch_size=batch_size,
        batch_length=batch_length,
        train_ratio=train_ratio,
        replay_capacity=replay_capacity,
        prefill=prefill,
        jit_compile=jit_compile,
        agent=agent,
        envs=envs,
        env_timeout=env_timeout,
        env_standby=env_standby,
        replay_context=replay_context,
        replay_online=replay_online,
    )
    previous = distribute.current()
    try:
        distribute.initialize()
        distribute.set_distribution(distribution)
        _check_run_settings(steps, steps_per_epoch, save_every)
        run = setup(logdir, config)
        chief = distribute.is_chief()
        # Only the chief evaluates (and writes): the others just train.
        evaluator = (
            make_evaluator(run, config, eval_every, eval_episodes) if chief else None
        )
    except ConfigError:
        restore_distribution(previous)
        raise
    except distribute.DistributionError as error:
        restore_distribution(previous)
        raise ConfigError(str(error)) from error
    except (ValueError, TypeError, ImportError, OSError) as error:
        restore_distribution(previous)
        # Anything that fails before the first step is a configuration problem.
        raise ConfigError(f"{type(error).__name__}: {error}") from error
    model, collector = run.model, run.collector
    callbacks = [_SummaryLogs(), StopOnSignal()]
    if not chief:  # the others never touch the logdir; their episode stats go
        callbacks.append(DrainMetrics(collector))
    else:
        try:
            callbacks += _writers(
                logdir,
                run,
                evaluator,
                agent=agent,
                outputs=outputs,
                terminal_pattern=terminal_pattern,
                log_every=log_every,
                report_every=report_every,
                report_batch=report_batch,
                report_length=report_length,
                save_every=save_every,
                eval_every=eval_every,
            )
        except BaseException:  # e.g. an unreachable MLflow server
            collector.close()
            if evaluator is not None:
                evaluator.close()
            restore_distribution(previous)
            raise
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
            initial_epoch=run.start_step // steps_per_epoch,
            callbacks=callbacks,
            verbose=fit_verbose if chief else 0,
            shuffle=False,
        )
    finally:
        collector.stop()
        collector.close()
        if evaluator is not None:
            evaluator.close()
        restore_distribution(previous)
        # An interrupted step may still run on the devices' threads.
        backend.wait_for_devices()
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    result = {
        "step": step,
        "start_step": run.start_step,
        "seconds": time.time() - started,
        "losses": summary.losses,
        "logdir": logdir,
        "stopped": bool(model.stop_training),
        "process": distribute.process_index(),
        "processes": distribute.process_count(),
    }
    return result


def _writers(
    logdir,
    run,
    evaluator,
    *,
    agent,
    outputs,
    terminal_pattern,
    log_every,
    report_every,
    report_batch,
    report_length,
    save_every,
    eval_every,
):
    """The callbacks that write the logdir: the logger and the checkpointer."""
    collector, replay = run.collector, run.replay
    callback = DreamerReportCallback(
        logdir,
        outputs=_outputs(
            outputs, logdir, terminal_pattern, run.start_step, run.resumed
        ),
        log_every=log_every,
        report_every=report_every,
        # With replay context, a report sequence has its context step first
        # (as the reference's): `report_length` steps are shown after it.
        report_data=(
            lambda: replay.sample(
                report_batch, report_length + collector.replay_context
            )
        )
        if report_every
        else None,
        train_data=collector,
        report_at_start=not run.resumed,
        evaluator=evaluator,
        eval_every=eval_every if evaluator is not None else None,
    )
    saver = checkpoint.Checkpointer(
        os.path.join(logdir, "ckpt"),
        save_every,
        state_fn=lambda: run_state(collector, agent),
        replay=replay,
    )
    return [callback, saver]


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


def _outputs(names, logdir, terminal_pattern, start_step, resumed):
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
            elif key == "wandb":  # a resumed run continues its W&B run
                built.append(
                    WandBOutput(
                        dir=logdir,
                        name=os.path.basename(os.path.abspath(logdir)),
                        **logdir_run_id(logdir, resumed),
                    )
                )
            else:
                built.append(make_output(name, logdir))
        except Exception as error:  # e.g. an unreachable MLflow server
            for output in built:
                output.close()
            raise ConfigError(f"output {name!r}: {error}") from error
    return built


class StopOnSignal(keras.callbacks.Callback):
    """Stops `fit` at the next step boundary after SIGINT or SIGTERM.

    The command's handlers (`keras_dreamer.train.signals`) raise
    `KeyboardInterrupt` where the signal lands; this raises it again at the
    end of the step if it was swallowed there, and, when `fit` unwinds,
    acknowledges it first (it is closed before the callbacks that write), so
    no repeat cuts their last writes.

    Examples:
        >>> StopOnSignal().on_train_batch_end(0)  # no signal: nothing happens
    """

    close_on_interrupt = True

    def on_train_batch_end(self, batch, logs=None):
        signals.check()

    def on_epoch_end(self, epoch, logs=None):
        signals.check()

    def close(self):
        """Acknowledges the signal: `fit` is unwinding."""
        signals.acknowledge()


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
