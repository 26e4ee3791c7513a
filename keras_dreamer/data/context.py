"""Replay context on the data side: stored latents, context windows, write-back.

DreamerV3 (`replay_context: 1`) stores each step's posterior latent in the
replay, trains on windows of T + 1 steps whose first step's latent starts
the RSSM, and writes the fresh posteriors of the T trained steps back into
the replay after each update. `ContextWindows` does the sampling and the
write-back for a `ReplayDataset`; `latent_spec` says how latents are stored.
"""

import collections

import numpy as np

from keras_dreamer.batch import LATENT_KEYS
from keras_dreamer.batch import ROW_KEY
from keras_dreamer.data.replay_files import ID_KEY

# Tickets of the latest batches kept for their write-back: more than any
# prefetch queue holds (Keras's default queue is 10 batches).
KEPT_TICKETS = 1024


def latent_spec(deter, stoch, classes):
    """How a replay stores each step's posterior latent.

    `deter` is float32, as DreamerV3 stores it. `stoch` is a one-hot sample:
    stored as uint8 it is exact and 4x smaller than float32 (batches carry
    it as float32 again).

    Args:
        deter: the RSSM's deterministic size.
        stoch: its number of latents.
        classes: classes per latent.

    Returns:
        `{"latent/deter": ((deter,), float32), "latent/stoch": ((stoch,
        classes), uint8)}`.

    Examples:
        >>> spec = latent_spec(512, 32, 4)
        >>> spec["latent/stoch"]
        ((32, 4), dtype('uint8'))
    """
    return {
        LATENT_KEYS[0]: ((int(deter),), np.dtype(np.float32)),
        LATENT_KEYS[1]: ((int(stoch), int(classes)), np.dtype(np.uint8)),
    }


def model_latent_spec(model):
    """`latent_spec` for a `kd.WorldModel` or `kd.Agent`.

    Args:
        model: the model.

    Returns:
        The spec dict.

    Examples:
        >>> import keras_dreamer as kd
        >>> wm = kd.WorldModel({"obs": (4,)}, kd.Discrete(2), preset="debug")
        >>> model_latent_spec(wm)["latent/deter"]
        ((8,), dtype('float32'))
    """
    config = getattr(model, "world_model", model).config
    return latent_spec(config["deter"], config["stoch"], config["classes"])


def check_context(replay_context):
    """`replay_context` as an int 0 or 1, else a one-line ValueError.

    Args:
        replay_context: context steps per sequence (DreamerV3 uses 1).

    Returns:
        The int.

    Examples:
        >>> check_context(1), check_context(False)
        (1, 0)
        >>> check_context(2)
        Traceback (most recent call last):
        ...
        ValueError: replay_context must be 0 (off) or 1 (one context step, as DreamerV3), got 2.
    """  # noqa: E501
    if replay_context in (0, 1) and not isinstance(replay_context, float):
        return int(replay_context)
    raise ValueError(
        "replay_context must be 0 (off) or 1 (one context step, as DreamerV3), "
        f"got {replay_context!r}."
    )


class ContextWindows:
    """Samples context windows from a replay and writes posteriors back.

    Each batch holds T + 1 steps per sequence with the stored latents
    (`latent/stoch` as float32) and `ROW_KEY`, an int32 ticket per sequence;
    `write_back(tickets, latents)` writes a train step's posteriors of the T
    trained steps into the rows the tickets name.

    Args:
        replay: a `Replay` with latents (`Replay.set_latents`).
        batch_size: B.
        batch_length: T, the trained steps.
        online: serve newly completed windows first (`Replay.enable_online`).

    Examples:
        >>> from keras_dreamer.data.replay import Replay
        >>> replay = Replay(100, latents=latent_spec(3, 2, 2))
        >>> for t in range(10):
        ...     replay.add({"obs": np.float32([t]), "action": np.float32([1]),
        ...                 "reward": 0.0, "is_first": t == 0, "is_last": False,
        ...                 "is_terminal": False})
        >>> windows = ContextWindows(replay, batch_size=2, batch_length=4)
        >>> batch = windows.sample()
        >>> batch["obs"].shape, batch["latent/stoch"].dtype, batch["replay/row"].shape
        ((2, 5, 1), dtype('float32'), (2, 5))
        >>> stoch = np.zeros((2, 4, 2, 2), np.float32)
        >>> stoch[..., 1] = 1.0
        >>> latents = {"latent/deter": np.ones((2, 4, 3)), "latent/stoch": stoch}
        >>> windows.write_back(batch["replay/row"][:, 0], latents)
        8
    """

    def __init__(self, replay, batch_size, batch_length, online=False):
        missing = [key for key in LATENT_KEYS if key not in replay.latents]
        if missing:
            raise ValueError(
                f"Replay context needs a replay that stores {list(LATENT_KEYS)}; "
                "declare them with Replay(..., latents=kd.data.context.latent_spec("
                "deter, stoch, classes)) or replay.set_latents(...)."
            )
        self.replay = replay
        self.batch_size = int(batch_size)
        self.length = int(batch_length) + 1
        self.online = bool(online)
        if self.online:
            replay.enable_online(self.length)
        self._tickets = collections.OrderedDict()
        self._next = 0

    def sample(self):
        """A batch of `[B, T + 1]` windows with latents and tickets."""
        batch = self.replay.sample(
            self.batch_size, self.length, online=self.online, ids=True
        )
        ids = batch.pop(ID_KEY)
        batch[LATENT_KEYS[1]] = batch[LATENT_KEYS[1]].astype(np.float32)
        tickets = np.empty((self.batch_size,), np.int32)
        for b in range(self.batch_size):
            tickets[b] = self._next
            self._tickets[self._next] = int(ids[b, 1])  # the first trained step
            self._next = (self._next + 1) % (2**31 - 1)
        while len(self._tickets) > KEPT_TICKETS * self.batch_size:
            self._tickets.popitem(last=False)
        batch[ROW_KEY] = np.repeat(tickets[:, None], self.length, 1)
        return batch

    def write_back(self, tickets, latents):
        """Writes `[B, T, ...]` latents into the trained steps of `tickets`.

        Args:
            tickets: int `[B]`, each sequence's `ROW_KEY` value.
            latents: dict of `latent/deter`, `latent/stoch` `[B, T, ...]`.

        Returns:
            The number of steps written (rows evicted since are skipped).
        """
        tickets = np.asarray(tickets).reshape(-1)
        known = [b for b, t in enumerate(tickets) if int(t) in self._tickets]
        if not known:
            return 0
        ids = np.int64([self._tickets[int(tickets[b])] for b in known])
        values = {key: np.asarray(latents[key])[known] for key in LATENT_KEYS}
        return self.replay.update(ids, values)

    def batch_spec(self, spec):
        """`spec` (a `batch_spec` of `[B, T]`) lengthened to T + 1, with the
        latents and the ticket."""
        from keras_dreamer.data.dataset import ArraySpec

        bt = (self.batch_size, self.length)
        out = {key: ArraySpec((*bt, *s.shape[2:]), s.dtype) for key, s in spec.items()}
        for key, (shape, _) in self.replay.latents.items():
            out[key] = ArraySpec((*bt, *shape), np.dtype(np.float32))
        out[ROW_KEY] = ArraySpec(bt, np.dtype(np.int32))
        return out
