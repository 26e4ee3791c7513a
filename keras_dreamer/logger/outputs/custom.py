"""CallableOutput: the way to plug a custom sink into the logger."""

from keras_dreamer.logger.outputs.base import AsyncOutput


class CallableOutput(AsyncOutput):
    """Wraps a function (or sink object) of the summaries tuple as an output.

    `fn` is called with a tuple of `(step, name, value)` summaries (only those
    whose name matches `pattern`; never with an empty tuple). If `fn` has
    `flush()` or `close()` methods, they are called when the output is
    flushed or closed. Values follow the `Logger` rules: `str` for text, numpy
    scalars for rank 0, numpy arrays of rank 1 to 4 otherwise.

    By default `fn` runs in the caller's thread; pass `parallel=True` to run
    it on a worker thread like the file outputs (at most one call in flight).

    Args:
        fn: callable taking the summaries tuple.
        pattern: optional regex (`re.search`) selecting the keys passed on.
        parallel: call `fn` on a worker thread.

    Examples:
        >>> rows = []
        >>> output = CallableOutput(rows.extend, pattern="^train/")
        >>> output([(1, "train/loss", 0.5), (1, "fps", 10.0)])
        >>> rows
        [(1, 'train/loss', 0.5)]
    """

    def __init__(self, fn, pattern=None, parallel=False):
        if not callable(fn):
            raise TypeError(f"CallableOutput needs a callable, got {type(fn).__name__}")
        super().__init__(pattern, parallel)
        self.fn = fn

    @property
    def name(self):
        name = getattr(self.fn, "__qualname__", None) or type(self.fn).__qualname__
        return f"CallableOutput({name.rsplit('<locals>.', 1)[-1]})"

    def _write(self, summaries):
        self.fn(summaries)

    def flush(self):
        super().flush()
        if hasattr(self.fn, "flush"):
            self.fn.flush()

    def _close(self):
        if hasattr(self.fn, "close"):
            self.fn.close()
