"""Metric aggregation and multi-sink logging, usable without Keras.

`Agg` aggregates metrics over a window, `Logger` stamps them with the step and
writes them to outputs (terminal, JSONL, TensorBoard, W&B, media files, custom
callables), `FPS` and `Usage` measure throughput and resources. Nothing here
imports Keras, JAX or TensorFlow; `tensorboard` and `wandb` are imported only
when their outputs are built.

Examples:
    >>> import tempfile
    >>> from keras_dreamer.logger import Agg, Logger, make_outputs
    >>> agg = Agg()
    >>> for loss in (1.0, 2.0):
    ...     agg.add("loss", loss, prefix="train")
    >>> logger = Logger(100, make_outputs(["jsonl"], tempfile.mkdtemp()))
    >>> logger.add(agg.result())
    >>> logger.close()
"""

from keras_dreamer.logger import media
from keras_dreamer.logger import outputs
from keras_dreamer.logger import video
from keras_dreamer.logger.agg import Agg
from keras_dreamer.logger.logdir import check_logdir
from keras_dreamer.logger.logger import Logger
from keras_dreamer.logger.outputs import OutputWarning
from keras_dreamer.logger.outputs import make as make_output
from keras_dreamer.logger.outputs import make_outputs
from keras_dreamer.logger.outputs import truncate_jsonl
from keras_dreamer.logger.usage import FPS
from keras_dreamer.logger.usage import Usage

__all__ = [
    "FPS",
    "Agg",
    "Logger",
    "OutputWarning",
    "Usage",
    "check_logdir",
    "make_output",
    "make_outputs",
    "media",
    "outputs",
    "truncate_jsonl",
    "video",
]
