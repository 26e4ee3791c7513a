"""Logger: stamps metrics with the step, buffers them, writes them to outputs."""

import numbers
import re
import threading
import warnings
from collections.abc import Mapping

import numpy as np

from keras_dreamer.logger.outputs.base import Output
from keras_dreamer.logger.outputs.base import OutputWarning
from keras_dreamer.logger.outputs.base import kind_of
from keras_dreamer.logger.outputs.custom import CallableOutput

MAX_KEY_LENGTH = 200
KEY_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
RESERVED_KEYS = frozenset({"step"})
_CHANNELS = (1, 3, 4)


class Logger:
    """Collects `(step, name, value)` summaries and writes them to outputs.

    `add` stamps values with `int(step) * multiplier`, read at add time, and
    buffers them; `write` hands the same tuple of buffered summaries to every
    output and clears the buffer; `close` writes what is left and closes every
    output, which waits for their background writes.

    Keys are 1 to 200 characters of letters, digits, "_", "." and "-", in one
    or more non-empty parts joined by "/" (e.g. "train/loss/image"); every
    sink accepts them. "step" is reserved (it is the step field of JSONL).

    Values: a `str` is text; anything `np.asarray` accepts (numbers, numpy,
    JAX and TensorFlow arrays, Keras variables) with a numeric or boolean dtype
    is, by rank: 0 a scalar, 1 a histogram, 2 a grayscale image (HW), 3 an
    image (HWC, C in 1, 3, 4), 4 a video (THWC, C in 1, 3, 4). Outputs receive
    numpy scalars for rank 0 and numpy arrays (copied, so later changes by the
    caller do not leak in) otherwise. Anything else raises at `add`.

    Failure isolation: an exception from an output (including one from its
    background write, surfaced on the next write or at close) is reported
    once per output as an `OutputWarning` naming the output and the exception;
    the output keeps receiving every later write, as do all the others, and
    `failures` counts its errors. With `strict=True` every output still gets
    the write, then the first error is raised.

    The logger is thread-safe: several threads may add and write.

    Args:
        step: the current step, anything `int()` accepts (an int, a counter
            object, a Keras variable); read at every `add`. The attribute
            `logger.step` may also be reassigned.
        outputs: iterable of outputs (see `keras_dreamer.logger.outputs`); any
            other callable of the summaries tuple, optionally with `flush()`
            and `close()`, is wrapped in a `CallableOutput`.
        multiplier: positive int the step is multiplied by (e.g. an action
            repeat, so logged steps count frames).
        strict: raise output errors instead of reporting them.

    Examples:
        >>> rows = []
        >>> logger = Logger(step=10, outputs=[rows.extend], multiplier=4)
        >>> logger.add({"loss": 0.5, "frame": np.zeros((8, 8, 3))}, prefix="train")
        >>> logger.write()
        >>> [(step, name) for step, name, _ in rows]
        [(40, 'train/loss'), (40, 'train/frame')]
        >>> logger.close()
    """

    def __init__(self, step, outputs, multiplier=1, strict=False):
        if not isinstance(multiplier, numbers.Integral) or multiplier < 1:
            raise ValueError(f"multiplier must be a positive int, got {multiplier!r}")
        self.outputs = tuple(_as_output(output) for output in outputs)
        self.step = step
        self.multiplier = int(multiplier)
        self.strict = bool(strict)
        self._buffer = []
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._failures = [0] * len(self.outputs)
        self._closed = False

    @property
    def failures(self):
        """Number of errors raised so far by each output that failed, by name."""
        counts = {}
        for output, count in zip(self.outputs, self._failures):
            if count:
                name = _name(output)
                counts[name] = counts.get(name, 0) + count
        return counts

    def add(self, mapping, prefix=None):
        """Buffers every item of `mapping` at the current step.

        Either every item is valid and buffered, or none is.

        Args:
            mapping: mapping from keys to values (see the class docstring).
            prefix: prepended to the keys as "<prefix>/<key>".

        Raises:
            ValueError: a bad key (too long, bad characters, reserved) or a
                value of unsupported rank, shape or emptiness; both named.
            TypeError: a value that is not array-like or not numeric, or a
                step that `int()` rejects.
            RuntimeError: the logger is closed.

        Examples:
            >>> logger = Logger(0, [])
            >>> logger.add({"loss": 1.0}, prefix="train")
        """
        if not isinstance(mapping, Mapping):
            raise TypeError(f"Logger.add takes a mapping, got {type(mapping).__name__}")
        step = self._current_step()
        entries = []
        for key, value in mapping.items():
            name = f"{prefix}/{key}" if prefix else key
            check_key(name)
            entries.append((step, name, summary_value(name, value)))
        self._extend(entries)

    def scalar(self, name, value):
        """Adds one number (rank 0).

        Args:
            name: metric key.
            value: an int, float, bool or rank-0 array.

        Raises:
            ValueError: the key is invalid or the value is not rank 0.

        Examples:
            >>> Logger(0, []).scalar("train/loss", 0.25)
        """
        self._add_kind(name, value, "scalar", "a scalar (rank 0)")

    def vector(self, name, value):
        """Adds one vector (rank 1); outputs show it as a histogram.

        Args:
            name: metric key.
            value: a rank-1 array-like.

        Raises:
            ValueError: the key is invalid or the value is not rank 1.

        Examples:
            >>> Logger(0, []).vector("episode/returns", [1.0, 2.5, 0.5])
        """
        self._add_kind(name, value, "histogram", "a vector (rank 1)")

    def image(self, name, value):
        """Adds one image: HW, or HWC with C in 1, 3, 4.

        Args:
            name: metric key.
            value: uint8 in [0, 255] or float in [0, 1].

        Raises:
            ValueError: the key is invalid or the value is not an image.

        Examples:
            >>> Logger(0, []).image("obs/image", np.zeros((64, 64, 3), np.uint8))
        """
        self._add_kind(name, value, "image", "an image (rank 2 or 3)")

    def video(self, name, value):
        """Adds one video: THWC with C in 1, 3, 4.

        Args:
            name: metric key.
            value: uint8 in [0, 255] or float in [0, 1].

        Raises:
            ValueError: the key is invalid or the value is not a video.

        Examples:
            >>> Logger(0, []).video("report/openloop", np.zeros((42, 64, 64, 3)))
        """
        self._add_kind(name, value, "video", "a video (rank 4)")

    def text(self, name, value):
        """Adds one string (Markdown in TensorBoard's Text tab).

        Args:
            name: metric key.
            value: a str.

        Raises:
            TypeError: the value is not a str.
            ValueError: the key is invalid.

        Examples:
            >>> Logger(0, []).text("config", "lr: 4e-5")
        """
        if not isinstance(value, str):
            raise TypeError(
                f"Text metric {name!r} must be a str, got {type(value).__name__}"
            )
        self._add_kind(name, value, "text", "a str")

    def write(self):
        """Hands everything buffered to every output, then clears the buffer.

        Returns quickly: slow outputs write on their own threads (a write only
        waits if that output's previous write is still running).

        Raises:
            Exception: with `strict=True`, the first error of an output.
        """
        with self._write_lock:
            with self._buffer_lock:
                summaries, self._buffer = tuple(self._buffer), []
            if summaries:
                self._dispatch(lambda output: output(summaries))

    def close(self):
        """Writes what is buffered, then closes (and so drains) every output.

        Idempotent, so it is safe in `finally` blocks and `atexit` handlers.
        After closing, `add` raises and `write` has nothing to write.

        Raises:
            Exception: with `strict=True`, the first error of an output.
        """
        with self._write_lock:
            if self._closed:
                return
            try:
                self.write()
            finally:
                self._closed = True
                self._dispatch(_close)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _current_step(self):
        try:
            step = int(self.step)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"Logger step {self.step!r} is not an integer: {error}"
            ) from error
        if step < 0:
            raise ValueError(f"Logger step must not be negative, got {step}")
        return step * self.multiplier

    def _add_kind(self, name, value, kind, description):
        check_key(name)
        value = summary_value(name, value)
        if kind_of(value) != kind:
            raise ValueError(
                f"Metric {name!r} has shape {np.shape(value)}; expected {description}"
            )
        self._extend([(self._current_step(), name, value)])

    def _extend(self, entries):
        with self._buffer_lock:
            if self._closed:
                raise RuntimeError("Cannot add to a closed Logger")
            self._buffer.extend(entries)

    def _dispatch(self, call):
        errors = []
        for index, output in enumerate(self.outputs):
            try:
                call(output)
            except Exception as error:
                errors.append(error)
                self._failures[index] += 1
                if self._failures[index] == 1 and not self.strict:
                    warnings.warn(
                        f"Logger output {_name(output)} failed with "
                        f"{type(error).__name__}: {error}. The other outputs are "
                        "unaffected and this one keeps receiving writes; its later "
                        "errors are counted in Logger.failures, not reported.",
                        OutputWarning,
                        stacklevel=3,
                    )
        if errors and self.strict:
            raise errors[0]


_RANKS = {
    "scalar": "0",
    "histogram": "1",
    "image": "2 or 3",
    "video": "4",
    "text": "str",
}


def _as_output(output):
    if isinstance(output, Output):
        return output
    if not callable(output):
        hint = " (build it with make_output)" if isinstance(output, str) else ""
        raise TypeError(f"Logger outputs must be callable, got {output!r}{hint}")
    return CallableOutput(output)


def _name(output):
    return getattr(output, "name", None) or type(output).__name__


def _close(output):
    close = getattr(output, "close", None)
    if close is not None:
        close()


def check_key(key):
    """Checks that `key` is a valid metric key (see `Logger`).

    Args:
        key: the metric key.

    Raises:
        TypeError: the key is not a str.
        ValueError: the key is too long, uses other characters, has an empty
            part, or is reserved.

    Examples:
        >>> check_key("train/loss")
        >>> check_key("train loss")
        Traceback (most recent call last):
        ValueError: Metric key 'train loss' is invalid: ...
    """
    if not isinstance(key, str):
        raise TypeError(f"Metric keys must be str, got {type(key).__name__} {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"Metric key {key[:40]!r}... is {len(key)} characters long; "
            f"at most {MAX_KEY_LENGTH} are allowed"
        )
    if not KEY_PATTERN.fullmatch(key):
        raise ValueError(
            f"Metric key {key!r} is invalid: use letters, digits, '_', '.' and '-', "
            "in non-empty parts joined by '/'"
        )
    if key in RESERVED_KEYS:
        raise ValueError(f"Metric key {key!r} is reserved")


def summary_value(name, value):
    """Validates one metric value and converts it to what outputs receive.

    Args:
        name: the metric key, used in error messages.
        value: a str, or anything `np.asarray` accepts with a numeric dtype.

    Returns:
        The str; a numpy scalar for rank 0; else a numpy array of rank 1 to 4
        that the caller cannot modify any more (a copy where needed).

    Raises:
        TypeError: not array-like, or not numeric.
        ValueError: rank above 4, empty, or images/videos whose last axis is
            not 1, 3 or 4 channels.

    Examples:
        >>> summary_value("loss", 0.5)
        np.float64(0.5)
    """
    if isinstance(value, str):
        return value
    try:
        array = np.asarray(value)
    except Exception as error:
        raise TypeError(
            f"Metric {name!r}: {type(value).__name__} is not array-like ({error})"
        ) from error
    if array.dtype.kind in "US":
        if array.ndim:
            raise ValueError(f"Metric {name!r}: strings must be single str values")
        item = array.item()
        return item.decode("utf-8", "replace") if isinstance(item, bytes) else item
    if array.dtype.kind not in "biuf":
        array = _as_float(name, value, array)
    if array.ndim > 4:
        raise ValueError(
            f"Metric {name!r} has shape {array.shape}; a value must be a scalar "
            "(rank 0), vector (1), image (2: HW or 3: HWC), video (4: THWC) or str"
        )
    if array.size == 0:
        raise ValueError(f"Metric {name!r} is empty (shape {array.shape})")
    if array.ndim >= 3 and array.shape[-1] not in _CHANNELS:
        what = "an image (HWC)" if array.ndim == 3 else "a video (THWC)"
        raise ValueError(
            f"Metric {name!r} has shape {array.shape}: as {what} it needs "
            f"1, 3 or 4 channels on the last axis"
        )
    if array.ndim == 0:
        return array[()]
    if array is value or not array.flags.owndata:
        array = array.copy()
    return array


def _as_float(name, value, array):
    """Converts extension float dtypes (e.g. bfloat16) to float32."""
    if array.dtype.kind == "V" and array.dtype.names is None:
        try:
            return array.astype(np.float32)
        except (TypeError, ValueError):
            pass
    raise TypeError(
        f"Metric {name!r}: {type(value).__name__} of dtype {array.dtype} is not a "
        "number, a numeric array or a str"
    )
