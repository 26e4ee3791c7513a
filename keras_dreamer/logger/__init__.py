"""Metric aggregation and multi-sink logging, usable without Keras."""

from keras_dreamer.logger import media
from keras_dreamer.logger.agg import Agg

__all__ = [
    "Agg",
    "media",
]
