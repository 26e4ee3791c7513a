"""Agg: aggregates metric values over a logging window."""

import re
import threading
import warnings
from collections.abc import Mapping

import numpy as np

MODES = ("avg", "mean", "sum", "min", "max", "last", "stack", "concat")
DEFAULT_MAX_BYTES = 256 * 2**20


class Agg:
    """Aggregates metrics added over a window and returns one value per key.

    Each key gets a mode on its first `add`: the `agg` argument if given, else
    the first matching regex rule, else the default: strings -> "last",
    scalars -> "mean", arrays -> "concat".

    Modes:
        - "mean"/"avg", "sum", "min", "max": float64, elementwise for arrays
          (every add must have the first add's shape). NaN updates are
          skipped elementwise, so "mean" is a NaN-robust mean; the result is
          NaN where no non-NaN value arrived.
        - "last": the latest value, as given (strings included).
        - "stack": `np.stack` of the added arrays (same shape; dtype kept, so
          uint8 frames stay uint8).
        - "concat": `np.concatenate` along axis 0 (scalars count as length-1
          arrays; trailing shapes must match; dtype kept).

    Memory stays bounded: "stack" and "concat" keep at most `max_bytes` per
    key and window. Past the cap, further adds are dropped ("concat" keeps the
    rows of the add that still fit), the result holds the earliest data, and a
    warning is issued once per key. The default cap, 256 MiB, holds about 25
    videos of 42x196x408x3 uint8 or 33 million float64 values per key.

    Agg is thread-safe.

    Args:
        rules: mapping (or sequence of pairs) from regex to mode; the first
            rule whose regex matches the key (`re.search`) sets the mode of
            keys added with `agg=None`.
        max_bytes: cap on the bytes kept per "stack"/"concat" key and window.

    Examples:
        >>> agg = Agg(rules={"^episode/": "sum"})
        >>> agg.add({"loss": 1.0, "episode/score": 2.0})
        >>> agg.add({"loss": float("nan"), "episode/score": 3.0})
        >>> agg.add("loss", 3.0)
        >>> agg.result()
        {'loss': 2.0, 'episode/score': 5.0}
    """

    def __init__(self, rules=None, max_bytes=DEFAULT_MAX_BYTES):
        pairs = rules.items() if isinstance(rules, Mapping) else rules or ()
        self._rules = []
        for pattern, mode in pairs:
            self._rules.append(
                (re.compile(pattern), _check_mode(mode, f"rule {pattern!r}"))
            )
        if not max_bytes > 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._reducers = {}
        self._modes = {}
        self._warned = set()

    def add(self, key_or_mapping, value=None, agg=None, prefix=None):
        """Adds one value, or every item of a mapping.

        Args:
            key_or_mapping: a key (str) or a mapping from keys to values.
            value: the value when a key is given: a str, a number, or anything
                `np.asarray` accepts (numpy, JAX and TensorFlow arrays).
            agg: the mode for these keys; None for the rule or default.
            prefix: prepended to the keys as "<prefix>/<key>".

        Raises:
            ValueError: unknown mode, a mode different from the key's mode in
                this window, a value that does not fit the mode (wrong shape,
                a string to a reducer).

        Examples:
            >>> agg = Agg()
            >>> agg.add("frames", np.zeros((2, 4)), prefix="video")
            >>> agg.add("frames", np.ones((3, 4)), prefix="video")
            >>> agg.result()["video/frames"].shape
            (5, 4)
        """
        if isinstance(key_or_mapping, Mapping):
            if value is not None:
                raise ValueError("Pass either a mapping, or a key and a value")
            items = key_or_mapping.items()
        else:
            items = [(key_or_mapping, value)]
        if agg is not None:
            _check_mode(agg, "agg")
        with self._lock:
            for key, item in items:
                key = f"{prefix}/{key}" if prefix else str(key)
                self._add(key, item, agg)

    def result(self, reset=True, prefix=None):
        """Returns the aggregated value of every key added since the last reset.

        Args:
            reset: start a new window afterwards.
            prefix: prepended to the returned keys as "<prefix>/<key>".

        Returns:
            A dict in first-added order. Reducer modes give a Python float for
            scalar inputs and a float64 array otherwise; "last" gives the value
            as added (a numpy scalar for numbers); "stack" and "concat" numpy
            arrays.

        Examples:
            >>> agg = Agg()
            >>> agg.add("x", 1)
            >>> agg.result(prefix="train")
            {'train/x': 1.0}
        """
        with self._lock:
            values = {
                f"{prefix}/{key}" if prefix else key: reducer.result()
                for key, reducer in self._reducers.items()
            }
            if reset:
                self._reset()
        return values

    def reset(self):
        """Forgets every value added so far and the modes of the keys."""
        with self._lock:
            self._reset()

    def _reset(self):
        self._reducers = {}
        self._modes = {}

    def _add(self, key, value, agg):
        if key in self._reducers:
            mode = self._modes[key]
            if agg is not None and _canonical(agg) != mode:
                raise ValueError(
                    f"Agg key {key!r} is aggregated with {mode!r} in this window; "
                    f"cannot add with {agg!r}"
                )
            reducer = self._reducers[key]
        else:
            mode = _canonical(agg or self._rule(key) or _default_mode(value))
            reducer = _REDUCERS[mode]()
        try:
            dropped = reducer.update(value, self._max_bytes)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Agg key {key!r} ({mode}): {error}") from error
        self._reducers[key] = reducer
        self._modes[key] = mode
        if dropped and key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"Agg key {key!r} reached max_bytes={self._max_bytes} in one window; "
                "later values of this window are dropped (warned once per key).",
                RuntimeWarning,
                stacklevel=3,
            )

    def _rule(self, key):
        for pattern, mode in self._rules:
            if pattern.search(key):
                return mode
        return None


def _check_mode(mode, what):
    if mode not in MODES:
        raise ValueError(
            f"Unknown aggregation mode {mode!r} for {what}; use one of {MODES}"
        )
    return mode


def _canonical(mode):
    return "mean" if mode == "avg" else mode


def _default_mode(value):
    if isinstance(value, str):
        return "last"
    array = np.asarray(value)
    if array.dtype.kind in "USO" and array.ndim == 0:
        return "last"
    return "mean" if array.ndim == 0 else "concat"


def _floats(value, shape):
    value = np.asarray(value, np.float64)
    if shape is not None and value.shape != shape:
        raise ValueError(f"shape {value.shape} differs from the first value's {shape}")
    return value


def _scalar_or_array(array):
    return float(array) if array.ndim == 0 else array


class _Mean:
    def __init__(self):
        self.total = self.count = None

    def update(self, value, max_bytes):
        value = _floats(value, None if self.total is None else self.total.shape)
        valid = ~np.isnan(value)
        if self.total is None:
            self.total = np.zeros_like(value)
            self.count = np.zeros(value.shape, np.int64)
        self.total += np.where(valid, value, 0.0)
        self.count += valid
        return False

    def result(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return _scalar_or_array(self.total / self.count)


class _Sum(_Mean):
    def result(self):
        return _scalar_or_array(np.where(self.count > 0, self.total, np.nan))


class _Extreme:
    fn = None

    def __init__(self):
        self.value = None

    def update(self, value, max_bytes):
        value = _floats(value, None if self.value is None else self.value.shape)
        # fmin/fmax ignore a NaN operand, so NaN updates are skipped.
        self.value = (
            value.copy() if self.value is None else type(self).fn(self.value, value)
        )
        return False

    def result(self):
        return _scalar_or_array(self.value.copy())


class _Min(_Extreme):
    fn = np.fmin


class _Max(_Extreme):
    fn = np.fmax


class _Last:
    def update(self, value, max_bytes):
        self.value = value if isinstance(value, str) else np.array(value)
        return False

    def result(self):
        value = self.value
        return value if isinstance(value, str) or value.ndim else value[()]


class _Stack:
    """Keeps whole arrays while they fit in the byte budget."""

    leading_axes = 0  # axes excluded from the shape check

    def __init__(self):
        self.values = []
        self.nbytes = 0
        self.empty = None

    def update(self, value, max_bytes):
        value = self._convert(value)
        if self.empty is None:
            self.empty = self._empty_like(value)
        elif value.shape[self.leading_axes :] != self.empty.shape[1:]:
            raise ValueError(
                f"shape {value.shape} does not fit the earlier values "
                f"(trailing shape {self.empty.shape[1:]})"
            )
        kept = self._fit(value, max_bytes - self.nbytes)
        if kept is not None:
            self.values.append(kept)
            self.nbytes += kept.nbytes
        return kept is not value

    def _convert(self, value):
        return np.array(value)

    def _empty_like(self, value):
        return value[None][:0]

    def _fit(self, value, room):
        return value if value.nbytes <= room else None

    def result(self):
        return np.stack(self.values) if self.values else self.empty


class _Concat(_Stack):
    """Keeps rows along axis 0 while they fit in the byte budget."""

    leading_axes = 1

    def _convert(self, value):
        return np.atleast_1d(np.array(value))

    def _empty_like(self, value):
        return value[:0]

    def _fit(self, value, room):
        row_bytes = max(1, value[:1].nbytes)
        rows = min(len(value), room // row_bytes)
        if rows == len(value):
            return value
        return value[:rows] if rows else None

    def result(self):
        return np.concatenate(self.values) if self.values else self.empty


_REDUCERS = {
    "mean": _Mean,
    "sum": _Sum,
    "min": _Min,
    "max": _Max,
    "last": _Last,
    "stack": _Stack,
    "concat": _Concat,
}
