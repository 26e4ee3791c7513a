"""Replay-context write-back: the train step's posteriors, out to the replay.

With replay context, DreamerV3 writes the fresh posterior latents of each
trained step back into the replay after every update, so the next time a
window starts at one of those steps, its context latent is recent. A
compiled train step returns only its logs, so the posteriors leave it
through `TrainedPosteriors`, a metric whose variables hold the latest
step's `deter`, `stoch` and the replay rows they belong to (metric
variables are part of the train state on every backend and are not saved
with the weights); `PosteriorWriteBack`, a callback, reads them after each
train step and hands them to the dataset's `write_back`.
"""

import warnings

import keras
import numpy as np  # noqa: F401 -- for the doctests
from keras import ops

from keras_dreamer import distribute
from keras_dreamer.batch import LATENT_KEYS
from keras_dreamer.batch import ROW_KEY


class TrainedPosteriors(keras.metrics.Metric):
    """Holds the posterior latents of the latest train step and its replay rows.

    It has no variables until `allocate` sizes it for a batch (a model's
    `fit` does, when its data writes back); `update_state` then copies the
    step's values in, and `result()` adds nothing to the logs.

    Args:
        name: the metric's name.
        **kwargs: forwarded to `keras.metrics.Metric`.

    Examples:
        >>> import numpy as np  # noqa: F401 -- for the doctests
        >>> held = TrainedPosteriors()
        >>> held.allocate(batch_size=2, length=3, deter=4, stoch=2, classes=3)
        True
        >>> stoch = np.zeros((2, 3, 2, 3))
        >>> held.update_state(np.int32([7, 9]), np.ones((2, 3, 4)), stoch)
        >>> rows, deter, stoch = held.values()
        >>> rows.tolist(), deter.shape, stoch.shape
        ([7, 9], (2, 3, 4), (2, 3, 2, 3))
        >>> held.result()
        {}
    """

    def __init__(self, name="trained_posteriors", **kwargs):
        super().__init__(name=name, **kwargs)
        self._shapes = None
        self._held = None

    @property
    def allocated(self):
        """Whether `allocate` has sized the variables."""
        return self._held is not None

    def allocate(self, batch_size, length, deter, stoch, classes):
        """Sizes the variables for `[B, T]` trained steps.

        Args:
            batch_size: B (the global batch).
            length: T, the trained steps per sequence (context excluded).
            deter: the RSSM's deterministic size.
            stoch: its number of latents.
            classes: classes per latent.

        Returns:
            True if the variables were (re)created, False if they had these
            shapes already (a compiled train step can then be reused).
        """
        shapes = ((batch_size,), (batch_size, length, deter))
        shapes += ((batch_size, length, stoch, classes),)
        if shapes == self._shapes:
            return False
        for variable in self._held or ():
            self._variables.remove(variable)
        names, dtypes = ("rows", "deter", "stoch"), ("int32", "float32", "float32")
        self._held = [
            self.add_variable(shape=shape, initializer="zeros", dtype=dtype, name=name)
            for shape, dtype, name in zip(shapes, dtypes, names)
        ]
        self._shapes = shapes
        return True

    def update_state(self, rows, deter, stoch):
        if self._held is None:
            return
        for variable, value in zip(self._held, (rows, deter, stoch)):
            variable.assign(ops.cast(value, variable.dtype))

    def result(self):
        return {}

    def reset_state(self):
        pass  # the values are replaced by every step

    def values(self):
        """`(rows [B], deter [B, T, D], stoch [B, T, S, K])` as numpy arrays."""
        return tuple(ops.convert_to_numpy(v.value) for v in self._held)


class PosteriorWriteBack(keras.callbacks.Callback):
    """After each train step, writes the step's posteriors back into the replay.

    Args:
        held: the model's `TrainedPosteriors`.
        data: the dataset of `fit`, with `write_back(rows, latents)`.

    Examples:
        See `write_back_callbacks`.
    """

    def __init__(self, held, data):
        super().__init__()
        self._held = held
        self._data = data

    def on_train_batch_end(self, batch, logs=None):
        self.model  # noqa: B018 -- Keras syncs the JAX train state on read
        rows, deter, stoch = self._held.values()
        self._data.write_back(rows, {LATENT_KEYS[0]: deter, LATENT_KEYS[1]: stoch})


def write_back_callbacks(model, data, held, rssm_config):
    """The callbacks `fit` needs to write posteriors back for `data`.

    Data with a `write_back` method and a `ROW_KEY` in its `batch_spec`
    (`kd.data.ReplayDataset(replay_context=1)`) gets a `PosteriorWriteBack`,
    after `held` was sized for its batches. A multi-process run writes
    nothing back: each process holds its own replay but the train step's
    posteriors form one global array, so context latents stay the ones
    acting stored (a warning says so).

    Args:
        model: the model about to `fit`.
        data: its `x`.
        held: the model's `TrainedPosteriors`.
        rssm_config: dict with the RSSM's `deter`, `stoch` and `classes`.

    Returns:
        A list of callbacks (empty when nothing is written back).

    Examples:
        >>> import numpy as np  # noqa: F401 -- for the doctests
        >>> write_back_callbacks(None, {"image": np.zeros((1, 2))}, None, {})
        []
    """
    spec = getattr(data, "batch_spec", None)
    if not hasattr(data, "write_back") or not spec or ROW_KEY not in spec:
        return []
    if distribute.process_count() > 1:
        warnings.warn(
            "Replay context: a multi-process run does not write the trained "
            "posteriors back into the replay (contexts keep the latents acting "
            "stored).",
            stacklevel=3,
        )
        return []
    batch_size, length = spec[ROW_KEY].shape[:2]
    if held.allocate(
        int(batch_size),
        int(length) - 1,
        rssm_config["deter"],
        rssm_config["stoch"],
        rssm_config["classes"],
    ):
        model.train_function = None  # its state has new variables
    return [PosteriorWriteBack(held, data)]


def record(held, batch, outputs):
    """In `compute_loss`: copies the posteriors of a context batch into `held`.

    Args:
        held: the model's `TrainedPosteriors`.
        batch: the train batch (with `ROW_KEY` when its rows are written back).
        outputs: the world model's outputs (`deter`, `stoch` `[B, T, ...]`).

    Examples:
        >>> record(TrainedPosteriors(), {}, {})  # no rows: nothing held
    """
    if not held.allocated or not isinstance(batch, dict) or ROW_KEY not in batch:
        return
    rows = batch[ROW_KEY][:, 0]
    held.update_state(
        rows, ops.stop_gradient(outputs["deter"]), ops.stop_gradient(outputs["stoch"])
    )
