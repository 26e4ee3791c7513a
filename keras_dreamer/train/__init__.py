"""The training command: `keras-dreamer train` / `python -m keras_dreamer.train`.

This package imports nothing heavy, so the command can choose the Keras
backend (`--backend`) before Keras is imported. The job, `train`, lives in
`keras_dreamer.train.job`; its parts each in their own module: the gin
factories (`make_env`, `make_world_model`, `make_agent`, `make_optimizer`)
in `factories`, building the run in `run`, multi-process coordination in
`processes`, the logdir and resume checks in `logdir`; a trained run's
policy (`load_policy`) and its evaluation (`evaluate_run`) in
`evaluation`. They load on first use; the command line (arguments,
backend, gin files) is `keras_dreamer.train.command`, which
`keras_dreamer.cli` calls (never the reverse).
"""

import importlib

_JOB_NAMES = (
    "train",
    "make_env",
    "make_world_model",
    "make_agent",
    "make_optimizer",
    "ConfigError",
)


_EVALUATION_NAMES = ("load_policy", "evaluate_run")


def main(argv=None):
    """Runs `keras-dreamer train` with `argv` (default: `sys.argv[1:]`).

    Args:
        argv: the arguments after the command, e.g. `["--logdir", "runs/x"]`.

    Returns:
        The exit code: 0 on success, 1 on a training failure, 2 on bad usage.

    Examples:
        >>> main(["--logdir", "runs/x", "--gin_file", "no_such.gin"])  # error on stderr
        2
    """
    from keras_dreamer.train import command

    return command.main(argv)


def __getattr__(name):
    if name in _JOB_NAMES:
        return getattr(importlib.import_module("keras_dreamer.train.job"), name)
    if name in _EVALUATION_NAMES:
        module = importlib.import_module("keras_dreamer.train.evaluation")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_dreamer.train' has no attribute {name!r}")
