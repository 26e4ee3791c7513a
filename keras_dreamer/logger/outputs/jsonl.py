"""JSONLOutput: one JSON line of scalars per step; a resumed file holds whole lines."""

import json
import math
import os
import warnings

from keras_dreamer.logger.outputs.base import AsyncOutput
from keras_dreamer.logger.outputs.base import group_by_step
from keras_dreamer.logger.outputs.base import kind_of
from keras_dreamer.logger.outputs.base import prepare_dir
from keras_dreamer.logger.outputs.base import write_atomically

_CHUNK = 1 << 16


class JSONLOutput(AsyncOutput):
    """Appends `{"step": int, "<key>": float, ...}` lines to `logdir/filename`.

    One line per step of each write, holding that step's scalars (other
    values are skipped; a step with no matching scalar writes no line). A step
    written again by a later write gets a second line. Non-finite values
    (NaN, +-inf) are written as `null`, so every line is strict JSON.

    Each line goes to the file in a single `os.write` on an `O_APPEND`
    descriptor, so lines never interleave and only the last line can be
    incomplete; should a write fail half way (e.g. a full disk) the file is cut
    back to its previous length. A process killed mid-write (SIGKILL, a power
    cut) can still leave a partial last line: Linux may stop a write between
    pages. On opening, such a line is removed, with a warning, so a resumed
    run appends after whole lines only.

    Writes run on a worker thread (see `AsyncOutput`).

    Args:
        logdir: directory of the file; created if missing.
        filename: file name inside `logdir`.
        pattern: optional regex (`re.search`) selecting the keys to write.
        parallel: write on a worker thread (default) or in the caller.

    Attributes:
        path: the path of the file.

    Raises:
        OSError: `logdir` is not a writable directory.

    Examples:
        >>> import tempfile
        >>> logdir = tempfile.mkdtemp()
        >>> output = JSONLOutput(logdir)
        >>> output([(10, "loss", 0.5), (10, "bad", float("nan"))])
        >>> output.close()
        >>> open(os.path.join(logdir, "metrics.jsonl")).read()
        '{"step": 10, "loss": 0.5, "bad": null}\\n'
    """

    def __init__(self, logdir, filename="metrics.jsonl", pattern=None, parallel=True):
        super().__init__(pattern, parallel)
        self.path = os.path.join(prepare_dir(logdir, "JSONLOutput"), filename)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            removed = _remove_partial_last_line(self._fd)
        except BaseException:
            os.close(self._fd)
            raise
        if removed:
            warnings.warn(
                f"JSONLOutput: removed a partial last line ({removed} bytes) from "
                f"{self.path}, left by an interrupted run.",
                stacklevel=2,
            )

    @property
    def name(self):
        return f"JSONLOutput({os.path.basename(self.path)})"

    def _write(self, summaries):
        for step, values in group_by_step(summaries):
            row = {
                name: _json_number(value)
                for name, value in values.items()
                if kind_of(value) == "scalar"
            }
            if row:
                self._append(_dumps({"step": step, **row}))

    def _append(self, line):
        start = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            while written < len(line):  # short write: only on a failing disk
                written += os.write(self._fd, line[written:])
        except BaseException:
            os.ftruncate(self._fd, start)
            raise

    def _close(self):
        os.close(self._fd)


def _json_number(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _dumps(row):
    return (json.dumps(row, allow_nan=False) + "\n").encode("utf-8")


def _remove_partial_last_line(fd):
    """Cuts the file back to its last newline; returns the bytes removed."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end < size:
        os.ftruncate(fd, end)
    return size - end


def truncate_jsonl(path, max_step):
    """Atomically drops the lines of a JSONL file with a step above `max_step`.

    Used when resuming from a checkpoint taken at `max_step`, so that steps
    logged after it by the interrupted run do not appear twice. Partial or
    unreadable lines are dropped too. The file is rewritten to a temporary
    file and renamed over the original, so it is never half rewritten. Call it
    before creating the `JSONLOutput` for that file. A missing file is left
    missing.

    Args:
        path: path of the JSONL file.
        max_step: the last step to keep (inclusive).

    Returns:
        The number of lines removed.

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
        >>> with open(path, "w") as f:
        ...     _ = f.write('{"step": 1, "x": 1.0}\\n{"step": 2, "x": 2.0}\\n')
        >>> truncate_jsonl(path, max_step=1)
        1
        >>> open(path).read()
        '{"step": 1, "x": 1.0}\\n'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as file:
        lines = file.read().splitlines(keepends=True)
    kept = [line for line in lines if _step_at_most(line, max_step)]
    if len(kept) == len(lines):
        return 0
    write_atomically(path, b"".join(kept), mode=os.stat(path).st_mode & 0o7777)
    return len(lines) - len(kept)


def _step_at_most(line, max_step):
    if not line.endswith(b"\n"):
        return False
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(step, int) and step <= max_step
