"""Logger outputs: where the `(step, name, value)` summaries go.

Every output is a callable taking the summaries tuple, with optional `flush()`
and `close()`. `make` builds one from a name, so configuration can say
`outputs=("terminal", "jsonl", "tensorboard")`:

| name          | output                                             | needs logdir |
|---------------|----------------------------------------------------|--------------|
| "terminal"    | `TerminalOutput()`                                 | no           |
| "jsonl"       | `JSONLOutput(logdir)` -> `metrics.jsonl`           | yes          |
| "scores"      | `JSONLOutput(logdir, "scores.jsonl", SCORES_PATTERN)` | yes       |
| "tensorboard" | `TensorBoardOutput(logdir)` -> `events.out.tfevents.*` | yes      |
| "wandb"       | `WandBOutput(dir=logdir, name=<logdir base name>)` | no           |
| "mlflow"      | `MLflowOutput(logdir=logdir, run_name=<base name>)` | see below    |
| "media"       | `MediaOutput(logdir)` -> `media/<key>_<step>.gif`  | yes          |

`SCORES_PATTERN` keeps `episode/score` and `episode/length`. "mlflow" logs to
`MLFLOW_TRACKING_URI` when it is set, else to a store in `logdir/mlruns`.
"""

import os

from keras_dreamer.logger.outputs.base import AsyncOutput
from keras_dreamer.logger.outputs.base import Output
from keras_dreamer.logger.outputs.base import OutputWarning
from keras_dreamer.logger.outputs.custom import CallableOutput
from keras_dreamer.logger.outputs.jsonl import JSONLOutput
from keras_dreamer.logger.outputs.jsonl import truncate_jsonl
from keras_dreamer.logger.outputs.mediafiles import MediaOutput
from keras_dreamer.logger.outputs.mlflow import MLflowOutput
from keras_dreamer.logger.outputs.tensorboard import TensorBoardOutput
from keras_dreamer.logger.outputs.terminal import TerminalOutput
from keras_dreamer.logger.outputs.terminal import format_value
from keras_dreamer.logger.outputs.wandb import WandBOutput

__all__ = [
    "AsyncOutput",
    "CallableOutput",
    "JSONLOutput",
    "MLflowOutput",
    "MediaOutput",
    "NAMES",
    "Output",
    "OutputWarning",
    "TensorBoardOutput",
    "TerminalOutput",
    "WandBOutput",
    "format_value",
    "make",
    "make_outputs",
    "truncate_jsonl",
]


# scores.jsonl holds what DreamerV3's does: episode scores and lengths.
SCORES_PATTERN = r"^episode/(score|length)$"


def _needs_logdir(name, logdir):
    if logdir is None:
        raise ValueError(f"Output {name!r} writes files and needs a logdir")
    return logdir


_FACTORIES = {
    "terminal": lambda logdir: TerminalOutput(),
    "jsonl": lambda logdir: JSONLOutput(_needs_logdir("jsonl", logdir)),
    "scores": lambda logdir: JSONLOutput(
        _needs_logdir("scores", logdir), "scores.jsonl", pattern=SCORES_PATTERN
    ),
    "tensorboard": lambda logdir: TensorBoardOutput(
        _needs_logdir("tensorboard", logdir)
    ),
    "wandb": lambda logdir: WandBOutput(
        dir=logdir, name=os.path.basename(os.path.abspath(logdir)) if logdir else None
    ),
    "media": lambda logdir: MediaOutput(_needs_logdir("media", logdir)),
    "mlflow": lambda logdir: MLflowOutput(
        logdir=logdir,
        run_name=os.path.basename(os.path.abspath(logdir)) if logdir else None,
    ),
}
NAMES = tuple(sorted(_FACTORIES))


def make(spec, logdir=None):
    """Turns an output name, output object or function into an output.

    Args:
        spec: a name from `NAMES` (case-insensitive), an `Output`, or any
            callable of the summaries tuple (wrapped in `CallableOutput`).
        logdir: run directory, needed by the names that write files.

    Returns:
        An output object.

    Raises:
        ValueError: unknown name (the message lists the known ones), or a
            file-writing name without a logdir.
        TypeError: `spec` is neither a name nor callable.

    Examples:
        >>> make("terminal")
        <TerminalOutput>
        >>> make(print)
        <CallableOutput(print)>
    """
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key not in _FACTORIES:
            known = ", ".join(repr(name) for name in NAMES)
            raise ValueError(f"Unknown output {spec!r}; known outputs: {known}")
        return _FACTORIES[key](logdir)
    if isinstance(spec, Output):
        return spec
    if callable(spec):
        return CallableOutput(spec)
    raise TypeError(
        f"An output is a name ({', '.join(NAMES)}) or a callable, got {spec!r}"
    )


def make_outputs(specs, logdir=None, media=True):
    """Builds a list of outputs, adding the media files whenever there is a logdir.

    This is how a training script should turn its configuration into outputs:
    with a logdir, every logged video also lands in `logdir/media/` even if
    "media" was not asked for. If building one output fails, those already
    built are closed before the error propagates.

    Args:
        specs: iterable of output specs (see `make`).
        logdir: run directory, or None for outputs that write no files.
        media: add a `MediaOutput` when `logdir` is given and none is listed.

    Returns:
        A list of outputs.

    Examples:
        >>> import tempfile
        >>> outputs = make_outputs(["terminal", "jsonl"], tempfile.mkdtemp())
        >>> [output.name for output in outputs]
        ['TerminalOutput', 'JSONLOutput(metrics.jsonl)', 'MediaOutput']
    """
    outputs = []
    try:
        for spec in specs:
            outputs.append(make(spec, logdir))
        if media and logdir is not None:
            if not any(isinstance(output, MediaOutput) for output in outputs):
                outputs.append(MediaOutput(logdir))
    except BaseException:
        for output in outputs:
            output.close()
        raise
    return outputs
