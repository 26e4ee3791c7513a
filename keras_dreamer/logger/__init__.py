"""Metric aggregation and multi-sink logging, usable without Keras."""

from keras_dreamer.logger import media
from keras_dreamer.logger.agg import Agg
from keras_dreamer.logger.usage import FPS
from keras_dreamer.logger.usage import Usage

__all__ = [
    "FPS",
    "Agg",
    "Usage",
    "media",
]
