"""A run's directory: preparing it, what a resumed run checks and rewrites.

A resumed run checks that the checkpoint matches it (model kind, spaces,
process count), drops the log lines the interrupted run wrote after its
checkpoint, and writes gin's operative config; a checkpoint records
`run_state` beside the model.
"""

import json
import os

import gin

from keras_dreamer import distribute
from keras_dreamer.logger import check_logdir
from keras_dreamer.logger import truncate_jsonl
from keras_dreamer.train.errors import ConfigError


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
        >>> from keras_dreamer.train.factories import make_env
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


def model_kind(agent):
    """What a run trains, as its checkpoint records it.

    Args:
        agent: whether the run trains an agent.

    Examples:
        >>> model_kind(True), model_kind(False)
        ('agent', 'world_model')
    """
    return "agent" if agent else "world_model"


def run_state(collector, agent):
    """What a checkpoint records of a run besides the model: env steps, the
    model kind, the spaces, the process count and the policy's noise state.

    Args:
        collector: the run's `kd.data.Collector`.
        agent: whether the run trains an agent.

    Returns:
        A JSON-serialisable dict.

    Examples:
        >>> from keras_dreamer.data import Collector
        >>> from keras_dreamer.train.factories import make_env
        >>> env = make_env(size=16, seed=0)
        >>> collector = Collector(env, batch_size=1, batch_length=4)
        >>> state = run_state(collector, agent=False)
        >>> state["model"], state["env_steps"], state["num_processes"]
        ('world_model', 0, 1)
    """
    state = {
        "env_steps": int(collector.env_steps),
        "model": model_kind(agent),
        "obs_space": {k: s.get_config() for k, s in collector.obs_space.items()},
        "act_space": collector.act_space.get_config(),
        "num_processes": distribute.process_count(),
    }
    if hasattr(collector.policy, "get_state"):
        state["policy_rng"] = collector.policy.get_state()
    return state


def check_process_count(state, resume):
    """Raises `ConfigError` when a checkpoint was written by another number
    of processes than this run has (each kept its own replay).

    Args:
        state: the checkpoint's state dict.
        resume: the checkpoint directory, or None (nothing to resume).

    Examples:
        >>> check_process_count({"num_processes": 1}, "ckpt/0000000500")
    """
    saved = int(state.get("num_processes", 1))
    count = distribute.process_count()
    if resume is not None and saved != count:
        raise ConfigError(
            f"The checkpoint {resume} was written by a run of {saved} "
            f"process(es), this run has {count}: resume with {saved} processes "
            "(each keeps its own replay and share of the batch), or use a new "
            "logdir."
        )
