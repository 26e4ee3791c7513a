"""DreamerV3's return normaliser: an EMA of the 5th and 95th percentiles."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_dreamer")
class ReturnNormalizer(keras.layers.Layer):
    """Tracks the spread of returns to scale the actor's advantages.

    Holds two non-trainable scalars, `lo` and `hi` (zero at the start, no bias
    correction). Each `update(x)` moves them `rate` of the way to the `low`
    and `high` percentiles of all of `x` (linear interpolation); `stats()`
    returns the offset `lo` and the scale `max(limit, hi - lo)`. DreamerV3
    updates before it reads, on every training step, so the current batch
    counts, and the scale is 1 until returns spread wider than that.

    Args:
        low: the lower percentile (5).
        high: the upper percentile (95).
        rate: the EMA rate (0.01).
        limit: the smallest scale (1).
        **kwargs: forwarded to `keras.layers.Layer`.

    Returns:
        `stats()` returns `(offset, scale)`, float32 scalars.

    Examples:
        >>> import numpy as np
        >>> norm = ReturnNormalizer()
        >>> norm.build()
        >>> norm.update(np.linspace(0.0, 1000.0, 101, dtype="float32"))
        >>> [round(float(v), 2) for v in norm.stats()]
        [0.5, 9.0]
    """

    def __init__(self, low=5.0, high=95.0, rate=0.01, limit=1.0, **kwargs):
        super().__init__(**kwargs)
        self.low = low
        self.high = high
        self.rate = rate
        self.limit = limit

    def build(self, input_shape=None):
        self.lo = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="lo"
        )
        self.hi = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="hi"
        )

    def update(self, x):
        """Moves `lo` and `hi` towards the percentiles of `x` (all entries)."""
        x = ops.reshape(ops.stop_gradient(ops.cast(x, "float32")), (-1,))
        quantiles = ops.quantile(x, [self.low / 100.0, self.high / 100.0])
        self.lo.assign(self.lo + self.rate * (quantiles[0] - self.lo))
        self.hi.assign(self.hi + self.rate * (quantiles[1] - self.hi))

    def stats(self):
        """`(offset, scale)`: `lo` and `max(limit, hi - lo)`."""
        lo = ops.convert_to_tensor(self.lo)
        scale = ops.maximum(self.limit, ops.convert_to_tensor(self.hi) - lo)
        return ops.stop_gradient(lo), ops.stop_gradient(scale)

    def call(self, x, update=True):
        """Updates with `x` if `update`, then returns `stats()`."""
        if update:
            self.update(x)
        return self.stats()

    def get_config(self):
        return {
            **super().get_config(),
            "low": self.low,
            "high": self.high,
            "rate": self.rate,
            "limit": self.limit,
        }
