"""Observation and action spaces.

Spaces are plain numpy objects (no Keras import) shared by environments, the
replay and the world model. A batch stores every action as a flat float32
vector: a one-hot vector of width `n` for `Discrete(n)`, the raw values for
`Box`.
"""

import numbers

import numpy as np


class Discrete:
    """A space of `n` discrete choices.

    In batches an action from this space is a float32 one-hot vector of width
    `n`; environments accept either that vector or a plain integer index.

    Args:
        n: number of choices, at least 1.

    Examples:
        >>> space = Discrete(4)
        >>> space.encode(2).tolist()
        [0.0, 0.0, 1.0, 0.0]
        >>> space.width
        4
    """

    def __init__(self, n):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"Discrete(n) needs an integer n >= 1, got {n!r}.")
        self.n = int(n)

    @property
    def shape(self):
        return ()

    @property
    def dtype(self):
        return np.dtype("int32")

    @property
    def width(self):
        """Width of the flat float32 vector that represents one value."""
        return self.n

    @property
    def discrete(self):
        return True

    @property
    def is_image(self):
        """Always False: a `Discrete` observation is a vector key."""
        return False

    def sample(self, rng=None):
        """A uniformly random index, as a Python int."""
        rng = rng if rng is not None else np.random.default_rng()
        return int(rng.integers(self.n))

    def index(self, action):
        """The integer index of `action` (an int, or a one-hot vector).

        Raises:
            ValueError: if `action` is neither an index in `[0, n)` nor a
                one-hot vector of width `n`.
        """
        array = np.asarray(action)
        if array.ndim == 0:
            if not np.issubdtype(array.dtype, np.integer) and not (
                np.issubdtype(array.dtype, np.floating) and float(array).is_integer()
            ):
                raise ValueError(
                    f"Discrete({self.n}) action must be an integer index or a "
                    f"one-hot vector of width {self.n}, got {action!r}."
                )
            idx = int(array)
            if not 0 <= idx < self.n:
                raise ValueError(
                    f"Discrete({self.n}) action index {idx} is outside [0, {self.n})."
                )
            return idx
        if array.shape != (self.n,):
            raise ValueError(
                f"Discrete({self.n}) action must be an integer index or a one-hot "
                f"vector of shape ({self.n},), got shape {array.shape}."
            )
        values = array.astype(np.float64)
        idx = int(np.argmax(values))
        if not (values[idx] == 1.0 and np.count_nonzero(values) == 1):
            raise ValueError(
                f"Discrete({self.n}) action vector must be one-hot (a single 1), "
                f"got {array.tolist()}."
            )
        return idx

    def encode(self, action):
        """`action` (index or one-hot) as a float32 one-hot vector."""
        onehot = np.zeros((self.n,), np.float32)
        onehot[self.index(action)] = 1.0
        return onehot

    def contains(self, action):
        try:
            self.index(action)
        except ValueError:
            return False
        return True

    def get_config(self):
        return {"class_name": "Discrete", "n": self.n}

    def __eq__(self, other):
        return isinstance(other, Discrete) and other.n == self.n

    def __hash__(self):
        return hash(("Discrete", self.n))

    def __repr__(self):
        return f"Discrete({self.n})"


class Box:
    """A box of values with a shape, bounds and a dtype.

    Images are `Box((H, W, C), 0, 255, "uint8")`; continuous actions and
    vector observations are float32 boxes.

    Args:
        shape: tuple of ints.
        low: lower bound, a scalar or an array broadcastable to `shape`.
        high: upper bound, likewise.
        dtype: numpy dtype name, `"float32"` by default.

    Examples:
        >>> Box((64, 64, 3), 0, 255, "uint8").width
        12288
    """

    def __init__(self, shape, low=-np.inf, high=np.inf, dtype="float32"):
        if isinstance(shape, numbers.Integral):
            shape = (int(shape),)
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
            raise ValueError(f"Box shape must be a tuple of ints, got {shape!r}.")
        shape = tuple(shape)
        for index, dim in enumerate(shape):
            if not _is_dim(dim):
                raise ValueError(
                    f"Box shape {shape!r} has a bad entry {index}: {dim!r}, "
                    "expected a positive int."
                )
        shape = tuple(int(d) for d in shape)
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.low = np.broadcast_to(np.asarray(low, np.float64), shape).copy()
        self.high = np.broadcast_to(np.asarray(high, np.float64), shape).copy()
        if np.any(self.low > self.high):
            raise ValueError(f"Box low must not exceed high, got {low} > {high}.")

    @property
    def width(self):
        """Number of values in one element (the product of `shape`)."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def discrete(self):
        return False

    @property
    def is_image(self):
        """Whether this box holds uint8 images (H, W) or (H, W, C)."""
        return self.dtype == np.uint8 and len(self.shape) in (2, 3)

    def sample(self, rng=None):
        rng = rng if rng is not None else np.random.default_rng()
        low = np.where(np.isfinite(self.low), self.low, -1.0)
        high = np.where(np.isfinite(self.high), self.high, 1.0)
        if np.issubdtype(self.dtype, np.integer):
            return rng.integers(low, high + 1, size=self.shape).astype(self.dtype)
        return rng.uniform(low, high, size=self.shape).astype(self.dtype)

    def encode(self, action):
        """`action` as a flat float32 vector, after checking its shape and bounds.

        Raises:
            ValueError: if the shape differs from the space's shape, a value
                is not finite, or a value lies outside `[low, high]`.
        """
        array = np.asarray(action, np.float32)
        if array.shape != self.shape:
            raise ValueError(
                f"Box action must have shape {self.shape}, got shape {array.shape}."
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"Box action must be finite, got {array.tolist()}.")
        if np.any(array < self.low) or np.any(array > self.high):
            raise ValueError(
                f"Box action {array.tolist()} is outside the bounds "
                f"[{self.low.tolist()}, {self.high.tolist()}]."
            )
        return array.reshape(-1)

    def contains(self, value):
        array = np.asarray(value)
        if array.shape != self.shape:
            return False
        return bool(np.all(array >= self.low) and np.all(array <= self.high))

    def get_config(self):
        def bound(values):
            flat = np.unique(values)
            value = flat[0] if flat.size == 1 else values
            return _jsonable(value)

        return {
            "class_name": "Box",
            "shape": list(self.shape),
            "low": bound(self.low),
            "high": bound(self.high),
            "dtype": self.dtype.name,
        }

    def __eq__(self, other):
        return (
            isinstance(other, Box)
            and other.shape == self.shape
            and other.dtype == self.dtype
            and np.array_equal(other.low, self.low)
            and np.array_equal(other.high, self.high)
        )

    def __hash__(self):
        return hash(("Box", self.shape, self.dtype.name))

    def __repr__(self):
        lo, hi = np.unique(self.low), np.unique(self.high)
        lo = lo[0] if lo.size == 1 else "..."
        hi = hi[0] if hi.size == 1 else "..."
        return f"Box({self.shape}, {lo}, {hi}, {self.dtype.name})"


def _jsonable(value):
    value = np.asarray(value, np.float64)
    if value.ndim == 0:
        value = float(value)
        if np.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    return [_jsonable(v) for v in value]


def _from_jsonable(value):
    if isinstance(value, str):
        return float(value)
    if isinstance(value, list):
        return np.asarray([_from_jsonable(v) for v in value], np.float64)
    return value


def space_from_config(config):
    """Rebuild a space from the dict its `get_config()` returned.

    Args:
        config: a dict from `Discrete.get_config()` or `Box.get_config()`.

    Returns:
        A `Discrete` or `Box`.

    Raises:
        ValueError: the dict describes neither.

    Examples:
        >>> space_from_config(Box((2,), -1, 1).get_config())
        Box((2,), -1.0, 1.0, float32)
    """
    config = dict(config)
    kind = config.pop("class_name", None)
    if kind == "Discrete":
        return Discrete(config["n"])
    if kind == "Box":
        return Box(
            tuple(config["shape"]),
            _from_jsonable(config["low"]),
            _from_jsonable(config["high"]),
            config["dtype"],
        )
    raise ValueError(f"Unknown space config {config!r}: expected Discrete or Box.")


def as_obs_space(value, key="observation"):
    """Interpret one entry of an observation space.

    Accepts a `Box`, a `Discrete`, or a shape tuple: a shape of rank 2 or 3 is
    a uint8 image in [0, 255]; any other rank is an unbounded float32 vector.

    Args:
        value: the entry (a space, a space config dict or a shape).
        key: the observation key, for error messages.

    Returns:
        A `Box` or `Discrete`.

    Raises:
        ValueError: if the value is none of these.

    Examples:
        >>> as_obs_space((64, 64, 3))
        Box((64, 64, 3), 0.0, 255.0, uint8)
        >>> as_obs_space((5,))
        Box((5,), -inf, inf, float32)
    """
    if isinstance(value, (Box, Discrete)):
        return value
    if isinstance(value, dict) and "class_name" in value:
        return space_from_config(value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(
            f"Observation space entry {key!r} must be a Box, a Discrete or a "
            f"shape tuple, got {value!r}."
        )
    value = tuple(value)
    for index, dim in enumerate(value):
        if not _is_dim(dim):
            raise ValueError(
                f"Observation space entry {key!r} has a bad shape {value!r}: "
                f"entry {index} is {dim!r}, expected a positive int."
            )
    shape = tuple(int(d) for d in value)
    if len(shape) in (2, 3):
        return Box(shape, 0, 255, "uint8")
    return Box(shape, -np.inf, np.inf, "float32")


def _is_dim(value):
    """A positive integer (numpy integers too; not bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return False
    return int(value) >= 1


def as_act_space(value):
    """Interpret an action space: a `Discrete`, a `Box`, or an int (`Discrete`).

    Args:
        value: a space, a space config dict or an int.

    Returns:
        A `Discrete` or `Box`.

    Raises:
        ValueError: if the value is none of these.

    Examples:
        >>> as_act_space(18)
        Discrete(18)
    """
    if isinstance(value, (Box, Discrete)):
        return value
    if isinstance(value, dict) and "class_name" in value:
        return space_from_config(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return Discrete(value)
    raise ValueError(
        f"act_space must be kd.Discrete(n), kd.Box(shape, low, high) or an "
        f"int, got {type(value).__name__} {value!r}."
    )
