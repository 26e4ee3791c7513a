"""Data: the replay, the acting driver, the online collector and the offline dataset.

Examples:
    >>> import keras_dreamer as kd
    >>> collector = kd.data.Collector("default", batch_size=2, batch_length=8,
    ...                               replay=kd.data.Replay(1000), seed=0)
    >>> collector[0]["is_first"].shape
    (2, 8)
"""

from keras_dreamer.data.collect import Collector
from keras_dreamer.data.collect import CollectorStopped
from keras_dreamer.data.collect import RandomPolicy
from keras_dreamer.data.dataset import ArraySpec
from keras_dreamer.data.dataset import OfflineDataset
from keras_dreamer.data.dataset import ReplayDataset
from keras_dreamer.data.dataset import batch_spec
from keras_dreamer.data.driver import Driver
from keras_dreamer.data.driver import Episode
from keras_dreamer.data.driver import EpisodeStats
from keras_dreamer.data.evaluate import Evaluator
from keras_dreamer.data.replay import Replay
from keras_dreamer.data.replay_files import CorruptReplayError

__all__ = [
    "ArraySpec",
    "Collector",
    "CollectorStopped",
    "CorruptReplayError",
    "Driver",
    "Episode",
    "EpisodeStats",
    "Evaluator",
    "OfflineDataset",
    "RandomPolicy",
    "Replay",
    "ReplayDataset",
    "batch_spec",
]
