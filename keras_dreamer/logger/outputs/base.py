"""The output protocol, the asynchronous base class and shared helpers.

An output is any callable taking a tuple of `(step, name, value)` summaries,
optionally with `flush()` and `close()`. Values follow the `Logger` rules: a
`str` is text; a numeric value of rank 0 is a scalar, rank 1 a histogram,
rank 2 or 3 an image (HW or HWC) and rank 4 a video (THWC).
"""

import concurrent.futures
import os
import re
import tempfile
import threading

import numpy as np

KINDS = {0: "scalar", 1: "histogram", 2: "image", 3: "image", 4: "video"}


class OutputWarning(RuntimeWarning):
    """Warns about a logger output: a failure, or data it had to drop.

    A `RuntimeWarning`; filter it like any warning.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", OutputWarning)  # silence sink errors
        ...     warnings.warn("a sink failed", OutputWarning)
    """


def kind_of(value):
    """Returns what a summary value is: "text", "scalar", "histogram", ...

    Args:
        value: a summary value.

    Returns:
        One of "text", "scalar", "histogram", "image", "video".

    Raises:
        ValueError: the value has rank 5 or more.

    Examples:
        >>> kind_of("hello"), kind_of(1.5), kind_of(np.zeros((2, 8, 8, 3)))
        ('text', 'scalar', 'video')
    """
    if isinstance(value, str):
        return "text"
    ndim = value.ndim if isinstance(value, np.generic | np.ndarray) else np.ndim(value)
    if ndim not in KINDS:
        raise ValueError(
            f"Expected a value of rank 0 to 4, got shape {np.shape(value)}"
        )
    return KINDS[ndim]


def group_by_step(summaries):
    """Groups summaries by step, in increasing step order.

    Within one step the names keep their first-seen order and a name logged
    twice keeps its last value.

    Args:
        summaries: iterable of `(step, name, value)`.

    Returns:
        A list of `(step, {name: value})` sorted by step.

    Examples:
        >>> group_by_step([(2, "a", 1), (1, "b", 2), (2, "a", 3)])
        [(1, {'b': 2}), (2, {'a': 3})]
    """
    groups = {}
    for step, name, value in summaries:
        groups.setdefault(int(step), {})[name] = value
    return sorted(groups.items())


def prepare_dir(path, owner):
    """Creates directory `path` if needed and checks that files can be written.

    Args:
        path: directory path (str or os.PathLike).
        owner: who asks, used in the error message (e.g. "JSONLOutput").

    Returns:
        The path as a str.

    Raises:
        OSError: the directory cannot be created or written to.

    Examples:
        >>> path = prepare_dir(tempfile.mkdtemp(), "doc")
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise OSError(
            error.errno,
            f"{owner}: logdir {path!r} is not a writable directory ({error})",
        ) from error
    return path


def write_atomically(path, data, mode=0o644):
    """Replaces file `path` with `data` so readers see the old or new file whole.

    The bytes go to a temporary file in the same directory, are synced to
    disk, and the temporary file is renamed over `path`.

    Args:
        path: destination file path.
        data: the new contents, bytes.
        mode: permission bits of the new file.

    Examples:
        >>> path = os.path.join(tempfile.mkdtemp(), "x.txt")
        >>> write_atomically(path, b"hello")
        >>> open(path).read()
        'hello'
    """
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            os.fchmod(file.fileno(), mode)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


class Output:
    """Base class of the outputs: a name, a regex filter and no-op flush/close.

    Subclasses implement `__call__(summaries)`. The `Logger` calls every output
    with the same tuple of `(step, name, value)` summaries and treats any
    exception as a failure of that output alone.

    Args:
        pattern: optional regex; only summaries whose name it matches (with
            `re.search`) are kept by `select`.

    Examples:
        >>> class Printer(Output):
        ...     def __call__(self, summaries):
        ...         for step, name, value in self.select(summaries):
        ...             print(step, name, value)
        >>> Printer(pattern="^loss")([(1, "loss", 0.5), (1, "acc", 1.0)])
        1 loss 0.5
    """

    def __init__(self, pattern=None):
        self._pattern = re.compile(pattern) if pattern else None

    @property
    def name(self):
        """How warnings and errors refer to this output."""
        return type(self).__name__

    def select(self, summaries):
        """Returns the summaries whose name matches the pattern, as a tuple."""
        if self._pattern is None:
            return tuple(summaries)
        return tuple(s for s in summaries if self._pattern.search(s[1]))

    def __call__(self, summaries):
        raise NotImplementedError

    def flush(self):
        """Waits until everything written so far has reached its destination."""

    def close(self):
        """Flushes and releases the output's resources. Idempotent."""

    def __repr__(self):
        return f"<{self.name}>"


class AsyncOutput(Output):
    """An output whose writes run on its own worker thread.

    At most one write is in flight: each call first waits for the previous
    write to finish, then hands the new summaries to the worker and returns.
    An exception raised by a background write is re-raised by the next call
    (after that call's write was submitted, so it is not lost), by `flush()`
    or by `close()`. `close()` drains the pending write, then calls `_close()`.

    Subclasses implement `_write(summaries)` (runs on the worker thread with
    the filtered, non-empty summaries) and optionally `_close()`.

    Args:
        pattern: optional regex filter on summary names.
        parallel: write on a worker thread (True) or inline in the caller.

    Examples:
        >>> class Collect(AsyncOutput):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.rows = []
        ...     def _write(self, summaries):
        ...         self.rows.extend(summaries)
        >>> output = Collect()
        >>> output([(0, "x", 1.0)])
        >>> output.close()
        >>> output.rows
        [(0, 'x', 1.0)]
    """

    def __init__(self, pattern=None, parallel=True):
        super().__init__(pattern)
        self._lock = threading.Lock()
        self._pending = None
        self._closed = False
        self._executor = None
        if parallel:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"keras_dreamer_{type(self).__name__}"
            )

    def __call__(self, summaries):
        summaries = self.select(summaries)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if not summaries:
                return
            if self._executor is None:
                self._write(summaries)
                return
            error = self._wait()
            self._pending = self._executor.submit(self._write, summaries)
        if error is not None:
            raise error

    def flush(self):
        with self._lock:
            error = self._wait()
        if error is not None:
            raise error

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            error = self._wait()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            try:
                self._close()
            except Exception as close_error:
                error = error or close_error
        if error is not None:
            raise error

    def _wait(self):
        """Waits for the pending write; returns its exception or None."""
        pending, self._pending = self._pending, None
        return None if pending is None else pending.exception()

    def _write(self, summaries):
        raise NotImplementedError

    def _close(self):
        pass
