"""The training command: arguments, backend choice, gin parsing, `train()`.

`keras-dreamer train` (in `keras_dreamer.cli`) and `python -m
keras_dreamer.train` both run `run(args)` here; nothing in this package
imports `keras_dreamer.cli`. Nothing here imports Keras before `--backend`
has set `KERAS_BACKEND`.
"""

import argparse
import importlib.util
import logging
import os
import sys
import traceback

from keras_dreamer.train import quiet
from keras_dreamer.train import signals

BACKEND_PACKAGES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
GIN_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin_configs"
)
DEFAULT_GIN = "default.gin"
# The flags of a multi-process run and the variables of
# `keras.distribution.initialize` they set.
ENV_VARS = {
    "job_addresses": "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "num_processes": "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "process_id": "KERAS_DISTRIBUTION_PROCESS_ID",
}


class UsageError(Exception):
    """Bad usage or configuration: printed as one line, exit code 2.

    Examples:
        >>> main(["--logdir", "runs/x", "--gin_file", "no_such.gin"])  # on stderr
        2
    """


def main(argv=None):
    """Runs the training command with `argv` (default: `sys.argv[1:]`).

    Args:
        argv: the arguments after the command, e.g. `["--logdir", "runs/x"]`.

    Returns:
        The exit code: 0 on success, 1 on a training failure, 2 on bad usage.

    Examples:
        >>> main(["--logdir", "runs/x", "--gin_file", "no_such.gin"])  # on stderr
        2
    """
    parser = argparse.ArgumentParser(
        prog="python -m keras_dreamer.train", description=DESCRIPTION
    )
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except UsageError as error:
        print(f"keras-dreamer train: error: {error}", file=sys.stderr)
        return 2


DESCRIPTION = (
    "Train a world model. Without --gin_file, runs default.gin (the embedded "
    "env). Gin files are looked up as given, then among the packaged configs "
    f"({GIN_DIR})."
)


def add_arguments(parser):
    """Adds the training command's arguments to an `argparse` parser.

    Args:
        parser: an `argparse.ArgumentParser` (or subparser).

    Examples:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> parser.parse_args(["--logdir", "runs/x"]).logdir
        'runs/x'
    """
    parser.add_argument("--logdir", required=True, help="run directory")
    parser.add_argument(
        "--gin_file", action="append", default=[], help="gin config file (repeatable)"
    )
    parser.add_argument(
        "--gin_param",
        action="append",
        default=[],
        help="gin binding, e.g. 'train.steps = 500' (repeatable)",
    )
    parser.add_argument(
        "--backend",
        choices=sorted(BACKEND_PACKAGES),
        help="Keras backend (default: the KERAS_BACKEND environment variable)",
    )
    parser.add_argument(
        "--devices",
        help="data parallel (JAX): devices per process, an int or 'all' "
        "(sets train.distribution; the batch is split over them)",
    )
    parser.add_argument(
        "--job_addresses",
        help="multi-process run (JAX): process 0's host:port "
        f"(or {ENV_VARS['job_addresses']})",
    )
    parser.add_argument(
        "--num_processes",
        type=int,
        help=f"multi-process run: number of processes (or {ENV_VARS['num_processes']})",
    )
    parser.add_argument(
        "--process_id",
        type=int,
        help=f"multi-process run: this process's id, 0 writes the logdir "
        f"(or {ENV_VARS['process_id']})",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the native libraries' logs: TensorFlow's start-up notices "
        "(oneDNN, absl, CPU features) and its C++ info lines, hidden by default",
    )


def select_backend(name):
    """Sets `KERAS_BACKEND` (if `name`) and checks that its package is installed.

    Args:
        name: "jax", "tensorflow", or None to keep `KERAS_BACKEND` (or
            Keras's default, TensorFlow).

    Returns:
        The backend name.

    Raises:
        UsageError: Keras already runs another backend, or the backend's
            package is missing (the message names the extra to install).

    Examples:
        >>> select_backend(None) == os.environ.get("KERAS_BACKEND", "tensorflow")
        True
    """
    if name:
        if "keras" in sys.modules:  # its backend is fixed: is it this one?
            from keras_dreamer import backend as running

            if running.name() != name:
                raise UsageError(
                    f"Keras was already imported with the {running.name()} backend."
                )
        os.environ["KERAS_BACKEND"] = name
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    package = BACKEND_PACKAGES.get(backend)
    if package is None:
        raise UsageError(
            f"Unsupported backend {backend!r}; use one of {sorted(BACKEND_PACKAGES)}."
        )
    if importlib.util.find_spec(package) is None:
        raise UsageError(
            f"The {backend} backend is not installed: "
            f"pip install 'keras-dreamer[{backend}]'."
        )
    return backend


def resolve_gin_file(name):
    """A gin file as given, else from the packaged configs (`.gin` optional).

    Args:
        name: a path, or the name of a packaged config ("debug.gin",
            "crafter").

    Returns:
        The path of an existing file.

    Raises:
        UsageError: no such file; the message lists the packaged configs.

    Examples:
        >>> os.path.basename(resolve_gin_file("crafter"))
        'crafter.gin'
    """
    candidates = [
        name,
        os.path.join(GIN_DIR, name),
        os.path.join(GIN_DIR, name + ".gin"),
    ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    available = sorted(f for f in os.listdir(GIN_DIR) if f.endswith(".gin"))
    raise UsageError(
        f"gin file {name!r} not found (packaged configs: {', '.join(available)})."
    )


def run(args):
    """Runs the training command on parsed arguments (see `add_arguments`).

    Args:
        args: the `argparse.Namespace` of a parser set up by `add_arguments`.

    Returns:
        The exit code: 0 success, 1 training failure, 130 interrupted
        (SIGINT, Ctrl-C), 143 terminated (SIGTERM).

    Raises:
        UsageError: bad usage or configuration.

    Examples:
        >>> import argparse
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["--logdir", "runs/x", "--gin_file", "no.gin"])
        >>> try:
        ...     run(args)
        ... except UsageError as error:
        ...     print(str(error).split(" (")[0])
        gin file 'no.gin' not found
    """
    interrupts = signals.Interrupts()
    with interrupts.installed():
        try:
            return _run(args)
        except KeyboardInterrupt:
            interrupts.acknowledge()
            print(
                "\nkeras-dreamer train: interrupted; the last checkpoint is kept.",
                file=sys.stderr,
            )
        signals.exit_after_cleanup(interrupts.exit_code())
        return interrupts.exit_code()


def _run(args):
    """`run` with the signal handlers installed."""
    select_backend(args.backend)
    verbose = bool(getattr(args, "verbose", False))
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info
    devices = parse_devices(getattr(args, "devices", None))
    for name, variable in ENV_VARS.items():
        value = getattr(args, name, None)
        if value is not None:
            os.environ[variable] = str(value)
    files = [resolve_gin_file(f) for f in (args.gin_file or [DEFAULT_GIN])]
    with quiet.filtered_stderr(not verbose):
        return _train(args, files, devices)


def _train(args, files, devices):
    """Parses the gin config and runs `job.train` (see `run`)."""
    import gin

    from keras_dreamer.train import job

    gin.clear_config()
    gin.add_config_file_search_path(GIN_DIR)
    # One at a time, so the error names the file or binding at fault (gin
    # raises ValueError, IOError, ParseError, ...).
    for path in files:
        try:
            gin.parse_config_file(path)
        except Exception as error:
            raise UsageError(f"bad gin file {path!r}: {_first_line(error)}") from None
    for binding in args.gin_param:
        try:
            gin.parse_config(binding)
        except Exception as error:
            message = _first_line(error)
            raise UsageError(f"bad gin binding {binding!r}: {message}") from None
    if devices is not None:
        gin.bind_parameter("train.distribution", devices)
    gin.finalize()
    _show_package_log()
    try:
        result = job.train(logdir=args.logdir)
    except job.ConfigError as error:
        raise UsageError(_first_line(error)) from None
    except Exception:
        traceback.print_exc()
        print(
            "keras-dreamer train: training failed; the last checkpoint in "
            f"{os.path.join(os.path.abspath(args.logdir), 'ckpt')} is kept.",
            file=sys.stderr,
        )
        return 1
    print(job.summary_line(result))
    if result["stopped"]:
        print(
            "keras-dreamer train: training stopped early (non-finite loss); the last "
            "good checkpoint is kept.",
            file=sys.stderr,
        )
        return 1
    return 0


def parse_devices(value):
    """The `train.distribution` of a `--devices` value.

    Args:
        value: None, "all", or a positive int (as a string).

    Returns:
        None (flag not given), "data_parallel" or an int.

    Raises:
        UsageError: anything else.

    Examples:
        >>> parse_devices("2"), parse_devices("all"), parse_devices(None)
        (2, 'data_parallel', None)
    """
    if value is None:
        return None
    if str(value).strip().lower() == "all":
        return "data_parallel"
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise UsageError(f"--devices must be a positive int or 'all', got {value!r}.")
    return count


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _show_package_log():
    """Shows the package's INFO lines on stderr (e.g. a speed choice made for
    this CPU at run time), unless the `keras_dreamer` logger is set up."""
    logger = logging.getLogger("keras_dreamer")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("keras_dreamer: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
