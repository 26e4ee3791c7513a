"""Multi-process coordination of a training job.

Every process runs the job; process 0, the chief, alone reads and writes
the logdir. Here: running a setup stage in every process with one verdict
(`all_processes`), putting back the distribution a job replaced, and the
callback that keeps a non-chief process's episode statistics from piling up.
"""

import contextlib

import keras
import numpy as np

from keras_dreamer import distribute
from keras_dreamer.train.errors import ConfigError


@contextlib.contextmanager
def all_processes(what):
    """Runs a block in every process; raises everywhere if it failed anywhere.

    Every process learns whether all succeeded (a collective in a
    multi-process run), so a failure in one stops all of them with an error
    instead of leaving the others waiting.

    Args:
        what: what the block does, for the error message.

    Examples:
        >>> with all_processes("reading the logdir"):
        ...     pass
    """
    if distribute.process_count() == 1:
        yield
        return
    error = None
    try:
        yield
    except Exception as caught:  # every process must reach the gather below
        error = caught
    failed = [
        i for i, ok in enumerate(distribute.gather(np.int32(error is None))) if not ok
    ]
    if error is not None:
        raise error
    if failed:
        raise ConfigError(
            f"Process(es) {failed} failed while {what} (see their error); this "
            f"process ({distribute.process_index()}) stops too."
        )


def restore_distribution(previous):
    """Makes `previous` Keras's distribution again, if the job replaced it.

    Args:
        previous: the distribution before the job (None for none).

    Examples:
        >>> restore_distribution(distribute.current())
    """
    if distribute.current() is not previous:
        keras.distribution.set_distribution(previous)


class DrainMetrics(keras.callbacks.Callback):
    """Drops a non-chief process's episode statistics at each epoch end (only
    the chief logs them), so they do not pile up.

    Args:
        collector: the process's `kd.data.Collector`.

    Examples:
        >>> class Source:
        ...     def drain_metrics(self):
        ...         print("drained")
        >>> DrainMetrics(Source()).on_epoch_end(0)
        drained
    """

    def __init__(self, collector):
        super().__init__()
        self.collector = collector

    def on_epoch_end(self, epoch, logs=None):
        self.collector.drain_metrics()
