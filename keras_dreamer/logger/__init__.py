"""Metric aggregation and multi-sink logging, usable without Keras."""

from keras_dreamer.logger import media

__all__ = [
    "media",
]
