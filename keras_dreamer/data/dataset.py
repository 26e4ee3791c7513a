"""Keras datasets of replay batches: the shared base and the offline dataset."""

import collections
import threading

import keras
import numpy as np

from keras_dreamer.batch import FLAG_KEYS
from keras_dreamer.batch import RESERVED_KEYS
from keras_dreamer.data import context
from keras_dreamer.data.replay import Replay
from keras_dreamer.data.replay import check_size
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete
from keras_dreamer.spaces import as_act_space
from keras_dreamer.spaces import as_obs_space
from keras_dreamer.spaces import space_from_config

ArraySpec = collections.namedtuple("ArraySpec", ["shape", "dtype"])


def batch_spec(obs_space, act_space, batch_size, batch_length):
    """Shapes and dtypes of one batch in the DESIGN.md batch format.

    Args:
        obs_space: dict of observation key to space (or shape tuple, as
            `kd.WorldModel` accepts).
        act_space: the action space (`Discrete`, `Box` or an int).
        batch_size: B.
        batch_length: T.

    Returns:
        `{key: ArraySpec(shape, dtype)}` for every obs key, `action`
        (float32 [B, T, A]), `reward` (float32 [B, T]) and the bool flags.

    Examples:
        >>> from keras_dreamer.spaces import Box, Discrete
        >>> spec = batch_spec({"image": Box((64, 64, 3), 0, 255, "uint8")},
        ...                   Discrete(3), 16, 64)
        >>> spec["action"]
        ArraySpec(shape=(16, 64, 3), dtype=dtype('float32'))
    """
    bt = (batch_size, batch_length)
    obs_space = {key: as_obs_space(space, key) for key, space in obs_space.items()}
    act_space = as_act_space(act_space)
    spec = {
        key: ArraySpec((*bt, *space.shape), np.dtype(space.dtype))
        for key, space in obs_space.items()
    }
    spec["action"] = ArraySpec((*bt, act_space.width), np.dtype(np.float32))
    spec["reward"] = ArraySpec(bt, np.dtype(np.float32))
    for key in FLAG_KEYS:
        spec[key] = ArraySpec(bt, np.dtype(bool))
    return spec


class ReplayDataset(keras.utils.PyDataset):
    """An endless `PyDataset` of fixed-size sequence batches from a `Replay`.

    The base of `OfflineDataset` and `Collector`. Every batch has the same
    shape (so `fit` compiles once). The dataset has no length
    (`num_batches` is None unless given): pass `steps_per_epoch` to `fit`.
    It runs in one process (`use_multiprocessing=True` is refused, since the
    replay would be copied into processes that never report back); extra
    `workers` threads are allowed and take turns under a lock.

    Args:
        replay: the `Replay` to sample from.
        obs_space: dict of observation key to space.
        act_space: the action space.
        batch_size: sequences per batch B.
        batch_length: steps per sequence T.
        num_batches: optional finite length of an epoch; None for endless.
        replay_context: 1 for DreamerV3's replay context: batches hold T + 1
            steps with each step's stored latent (`latent/deter`,
            `latent/stoch`) and `replay/row`, and `fit` writes the trained
            steps' posteriors back into the replay
            (`kd.data.context.ContextWindows`); 0 (default) for plain `[B, T]`
            batches.
        replay_online: serve each newly completed window first, as
            DreamerV3's `replay.online` (`Replay.enable_online`).
        latents: the replay's latents (`kd.data.context.latent_spec`), if
            the replay does not declare them yet.
        **kwargs: `keras.utils.PyDataset` options (`workers`,
            `max_queue_size`).

    Examples:
        >>> import numpy as np
        >>> from keras_dreamer.spaces import Box, Discrete
        >>> replay = Replay(100)
        >>> for t in range(10):
        ...     replay.add({"image": np.zeros((4, 4, 1), np.uint8),
        ...                 "action": np.float32([1, 0]), "reward": 0.0,
        ...                 "is_first": t == 0, "is_last": False,
        ...                 "is_terminal": False})
        >>> data = ReplayDataset(replay, {"image": Box((4, 4, 1), 0, 255, "uint8")},
        ...                      Discrete(2), batch_size=2, batch_length=5)
        >>> data[0]["image"].shape
        (2, 5, 4, 4, 1)
    """

    def __init__(
        self,
        replay,
        obs_space,
        act_space,
        batch_size,
        batch_length,
        num_batches=None,
        replay_context=0,
        replay_online=False,
        latents=None,
        **kwargs,
    ):
        if kwargs.get("use_multiprocessing"):
            raise ValueError(
                f"{type(self).__name__} runs in one process: its replay (and "
                "envs) would be copied into worker processes that never report "
                "back. Leave use_multiprocessing=False."
            )
        super().__init__(**kwargs)
        check_size("batch_size", batch_size)
        if check_size("batch_length", batch_length) > replay.capacity:
            raise ValueError(
                f"batch_length {batch_length} is longer than the replay capacity "
                f"{replay.capacity}: the replay can never hold one sequence."
            )
        self.replay = replay
        self.obs_space = dict(obs_space)
        self.act_space = act_space
        self.batch_size = int(batch_size)
        self.batch_length = int(batch_length)
        self.batch_spec = batch_spec(
            self.obs_space, act_space, self.batch_size, self.batch_length
        )
        self._num_batches = num_batches
        self._lock = threading.RLock()
        self.replay_context = context.check_context(replay_context)
        if not isinstance(replay_online, bool):
            raise ValueError(f"replay_online must be a bool, got {replay_online!r}.")
        self.replay_online = replay_online
        if latents is not None:
            replay.set_latents(latents)
        self._windows = None
        if self.replay_context:
            self._windows = context.ContextWindows(
                replay, self.batch_size, self.batch_length, online=replay_online
            )
            self.batch_spec = self._windows.batch_spec(self.batch_spec)
        elif replay_online:
            replay.enable_online(self.batch_length)

    @property
    def sequence_length(self):
        """Steps per sampled sequence: `batch_length` plus the context step."""
        return self.batch_length + self.replay_context

    @property
    def num_batches(self):
        """Batches per epoch: None (endless) unless given."""
        return self._num_batches

    def __getitem__(self, index):
        """The next batch (the index is ignored: batches are sampled)."""
        del index
        with self._lock:
            return self._next_batch()

    def _next_batch(self):
        if self._windows is not None:
            return self._windows.sample()
        return self.replay.sample(
            self.batch_size, self.batch_length, online=self.replay_online
        )

    def write_back(self, tickets, latents):
        """Writes a train step's posteriors into the replay rows they came from.

        `fit` calls it after each step through `kd.posteriors`; it writes
        only with `replay_context`.

        Args:
            tickets: int `[B]`, each sequence's `replay/row` value.
            latents: dict of `latent/deter`, `latent/stoch` `[B, T, ...]`.

        Returns:
            The number of replay steps written.
        """
        if self._windows is None:
            return 0
        with self._lock:
            return self._windows.write_back(tickets, latents)

    def drain_metrics(self):
        """Metrics since the last call; here the replay's `replay/*` stats.

        Returns:
            A dict of floats.
        """
        with self._lock:
            return {key: float(value) for key, value in self.replay.stats().items()}


class OfflineDataset(ReplayDataset):
    """Batches from a replay directory saved by `Replay.save`, with no env.

    Args:
        directory: the saved replay directory.
        batch_size: sequences per batch B.
        batch_length: steps per sequence T.
        seed: int seed of the sampling; None continues the saved RNG state.
        num_batches: optional finite length of an epoch; None for endless.
        **kwargs: `keras.utils.PyDataset` options.

    Raises:
        CorruptReplayError: naming the file, if the directory is unreadable.
        ValueError: if no saved stream holds `batch_length` steps.

    Examples:
        Save a replay, then train from it with no env
        (`model.fit(data, steps_per_epoch=100)`):

        >>> import tempfile
        >>> replay = Replay(1000)
        >>> for t in range(20):
        ...     replay.add({"image": np.zeros((8, 8, 3), np.uint8),
        ...                 "action": np.float32([1, 0]), "reward": 0.0,
        ...                 "is_first": t == 0, "is_last": False,
        ...                 "is_terminal": False})
        >>> directory = tempfile.mkdtemp()
        >>> _ = replay.save(directory)
        >>> data = OfflineDataset(directory, batch_size=4, batch_length=10, seed=0)
        >>> data.act_space, data[0]["image"].shape
        (Discrete(2), (4, 10, 8, 8, 3))
    """

    def __init__(
        self, directory, batch_size, batch_length, seed=None, num_batches=None, **kwargs
    ):
        replay = Replay.from_directory(directory, seed=seed)
        if len(replay) and replay.num_sequences(batch_length) == 0:
            raise ValueError(
                f"batch_length {batch_length} is longer than every episode stream "
                f"in {directory} (replay size {len(replay)})."
            )
        obs_space, act_space = _spaces(replay, directory)
        super().__init__(
            replay,
            obs_space,
            act_space,
            batch_size,
            batch_length,
            num_batches,
            **kwargs,
        )
        self.directory = directory


def _spaces(replay, directory):
    """The spaces a replay was collected with: saved metadata, else inferred."""
    meta = replay.metadata
    if "obs_space" in meta and "act_space" in meta:
        obs_space = {
            key: space_from_config(cfg) for key, cfg in meta["obs_space"].items()
        }
        return obs_space, space_from_config(meta["act_space"])
    spec = replay.spec
    if spec is None:
        raise ValueError(f"The replay in {directory} is empty.")
    obs_space = {}
    for key, (shape, dtype) in spec.items():
        if key not in RESERVED_KEYS:
            image = dtype == np.uint8 and len(shape) in (2, 3)
            obs_space[key] = (
                Box(shape, 0, 255, "uint8") if image else Box(shape, dtype=dtype)
            )
    actions = np.concatenate([replay.stream(w)["action"] for w in replay.workers])
    one_hot = np.all((actions == 0) | (actions == 1)) and np.all(actions.sum(-1) == 1)
    width = spec["action"][0][0]
    return obs_space, Discrete(width) if one_hot else Box((width,))
