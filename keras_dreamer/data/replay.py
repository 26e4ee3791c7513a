"""Replay: a FIFO store of env steps that samples training sequences.

Each worker (one env) writes its own stream of steps. A stream lives in
preallocated chunks of `chunk_size` steps; a sampled sequence is `T`
consecutive steps of one stream and may cross episode boundaries (`is_first`
marks where a new episode starts) and chunk boundaries, never workers.

A step pairs obs t with the action taken at obs t, as in DreamerV3: the
collector adds `{**obs_t, "action": a_t}` and then steps the env with `a_t`.
"""

import collections
import functools
import threading
import uuid

import numpy as np

from keras_dreamer.batch import FLAG_KEYS
from keras_dreamer.batch import LATENT_KEYS
from keras_dreamer.batch import LOG_PREFIX
from keras_dreamer.batch import RESERVED_KEYS
from keras_dreamer.data import replay_files
from keras_dreamer.data.replay_files import ID_KEY as _ID
from keras_dreamer.data.replay_files import worker_id


def _locked(method):
    """Run a public `Replay` method under the replay's lock."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class _Chunk:
    """Preallocated arrays for `chunk_size` consecutive steps of one stream."""

    def __init__(self, spec, size):
        self.uid = -1
        self.arrays = {
            key: np.empty((size, *shape), dtype) for key, (shape, dtype) in spec.items()
        }
        self.arrays[_ID] = np.empty((size,), np.int64)

    @property
    def nbytes(self):
        return sum(array.nbytes for array in self.arrays.values())


class _Stream:
    """The chunks of one worker: rows `[start, start + length)` are live."""

    def __init__(self):
        self.chunks = []
        self.start = 0
        self.length = 0


class Replay:
    """A replay of env steps with uniform sequence sampling.

    Steps are stored as uint8/float32/bool arrays in preallocated chunks,
    one stream of chunks per worker. When full, the oldest step is evicted
    first (FIFO by insertion order across workers). `sample` draws sequence
    starts uniformly from all positions that have `batch_length` steps of
    one stream behind them, so it never reads unwritten or evicted data.

    The first `add` fixes the keys, shapes and dtypes: every obs key (e.g.
    `image` uint8 [H, W, C]), `action` float32 [A] (the action taken at this
    obs), `reward` float32, `is_first`, `is_last`, `is_terminal` bool. Keys
    starting with `log/` are ignored. The public methods are thread-safe.

    For replay context the replay also stores each step's posterior latent
    (`latents`, see `kd.data.context.latent_spec`): a step added without
    them (e.g. by a random policy) stores zeros, the RSSM's initial state;
    `update` writes fresher latents into stored steps, and `sample(...,
    online=True)` serves each newly completed window first
    (`enable_online`), as DreamerV3's `replay.online`.

    Args:
        capacity: the most steps held at once (all workers together).
        chunk_size: steps per preallocated chunk (at most `capacity`) and per
            saved file.
        seed: int seed of the sampling, or None.
        latents: optional `{key: (shape, dtype)}` of stored latents.

    Examples:
        >>> import numpy as np
        >>> replay = Replay(capacity=100, chunk_size=16, seed=0)
        >>> for t in range(20):
        ...     replay.add({"image": np.zeros((4, 4, 3), np.uint8),
        ...                 "action": np.eye(3, dtype=np.float32)[t % 3],
        ...                 "reward": 0.0, "is_first": t == 0,
        ...                 "is_last": False, "is_terminal": False})
        >>> batch = replay.sample(batch_size=2, batch_length=8)
        >>> batch["image"].shape, batch["action"].shape, batch["is_first"].dtype
        ((2, 8, 4, 4, 3), (2, 8, 3), dtype('bool'))
    """

    def __init__(self, capacity, chunk_size=1024, seed=None, latents=None):
        self.capacity = check_size("Replay capacity", capacity)
        self.chunk_size = min(
            check_size("Replay chunk_size", chunk_size), self.capacity
        )
        self.metadata = {}
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(seed)
        self._spec = None
        self._streams = {}
        self._free = []
        self._nbytes = 0
        self._size = 0
        self._episodes = 0
        self._next_id = 0
        self._next_uid = 0
        self._token = uuid.uuid4().hex[:8]
        self._latents = {}
        self._online_length = None
        self._online = collections.deque()
        self._added = {}
        if latents:
            self.set_latents(latents)

    def __len__(self):
        return self._size

    def __repr__(self):
        return (
            f"Replay(capacity={self.capacity}, size={self._size}, "
            f"workers={len(self._streams)})"
        )

    @property
    def spec(self):
        """`{key: (shape, dtype)}` of one stored step, or None before any add."""
        return None if self._spec is None else dict(self._spec)

    @property
    def workers(self):
        """The worker ids that have a stream, in order of their first add."""
        return list(self._streams)

    @_locked
    def add(self, step, worker=0):
        """Append one env step to a worker's stream, evicting the oldest if full.

        Args:
            step: dict of the obs keys, `action` (float32 vector), `reward`,
                `is_first`, `is_last`, `is_terminal`; `log/` keys are ignored.
            worker: int or str id of the stream (one per env).

        Raises:
            ValueError: naming the key, if a required key is missing, a key
                is unexpected, or a value has another shape or an
                incompatible dtype than the first step's.
        """
        worker = worker_id(worker)
        row = self._row(step)
        if self._size >= self.capacity:
            self._evict()
        stream = self._streams.get(worker)
        if stream is None:
            stream = self._streams[worker] = _Stream()
        chunk, index = self._slot(stream)
        for key, value in row.items():
            chunk.arrays[key][index] = value
        chunk.arrays[_ID][index] = self._next_id
        self._next_id += 1
        stream.length += 1
        self._size += 1
        self._episodes += bool(row["is_first"])
        self._queue_online(worker, stream)

    @_locked
    def num_sequences(self, length):
        """Number of distinct sequences of `length` steps that `sample` can draw."""
        return int(sum(self._counts(length)))

    @_locked
    def sample(self, batch_size, batch_length, online=False, ids=False):
        """Sample a batch of sequences, starts drawn uniformly.

        Args:
            batch_size: number of sequences B.
            batch_length: steps per sequence T.
            online: if True, newly completed windows (`enable_online`) are
                served first, the rest drawn uniformly.
            ids: if True, the batch also holds `_id` int64 [B, T], the
                stored id of each step (for `update`).

        Returns:
            A dict of numpy arrays `[B, T, ...]`: every stored key, e.g.
            `image` uint8 [B, T, H, W, C], `action` float32 [B, T, A],
            `reward` float32 [B, T], `is_first`/`is_last`/`is_terminal` bool
            [B, T].

        Raises:
            ValueError: if `batch_length` exceeds the capacity, or no stream
                holds `batch_length` steps yet.
        """
        check_size("batch_size", batch_size)
        if check_size("batch_length", batch_length) > self.capacity:
            raise ValueError(
                f"batch_length {batch_length} is longer than the replay capacity "
                f"{self.capacity}: the replay can never hold one sequence."
            )
        counts = np.asarray(self._counts(batch_length), np.int64)
        total = int(counts.sum())
        if total == 0:
            longest = max((s.length for s in self._streams.values()), default=0)
            raise ValueError(
                f"batch_length {batch_length} is longer than the data: the "
                f"longest worker stream holds {longest} steps (replay size "
                f"{self._size}). Collect more steps first."
            )
        starts = self._online_starts(batch_size, batch_length) if online else []
        picks = self._rng.integers(total, size=batch_size - len(starts))
        ends = np.cumsum(counts)
        which = np.searchsorted(ends, picks, side="right")
        offsets = picks - (ends[which] - counts[which])
        streams = list(self._streams.values())
        for index, offset in zip(which, offsets):
            stream = streams[index]
            starts.append((stream, stream.start + int(offset)))
        spec = dict(self._spec, **({_ID: ((), np.dtype(np.int64))} if ids else {}))
        batch = {
            key: np.empty((batch_size, batch_length, *shape), dtype)
            for key, (shape, dtype) in spec.items()
        }
        for b, (stream, position) in enumerate(starts):
            rows = {key: array[b] for key, array in batch.items()}
            self._copy(stream, position, batch_length, rows)
        return batch

    @_locked
    def set_latents(self, latents):
        """Declare the stored latents: `{key: (shape, dtype)}`.

        Steps added without these keys store zeros. A replay that already
        holds steps (e.g. loaded from a run without replay context) gets
        zero latents for them.

        Args:
            latents: dict of latent key (`kd.batch.LATENT_KEYS`) to its
                per-step `(shape, dtype)`.

        Raises:
            ValueError: a key is not a latent key, or the replay stores it
                with another shape or dtype.
        """
        latents = {
            key: (tuple(int(d) for d in shape), np.dtype(dtype))
            for key, (shape, dtype) in dict(latents).items()
        }
        odd = [key for key in latents if key not in LATENT_KEYS]
        if odd:
            raise ValueError(
                f"Replay latents must be among {list(LATENT_KEYS)}, got {odd}."
            )
        for key, entry in latents.items():
            stored = (self._spec or {}).get(key)
            if stored is not None and stored != entry:
                raise ValueError(
                    f"Replay stores {key!r} as {stored[1].name}{list(stored[0])}, "
                    f"not {entry[1].name}{list(entry[0])}; use a new replay."
                )
        self._latents = latents
        if self._spec is not None:
            self._add_columns(latents)

    @property
    def latents(self):
        """The declared latents `{key: (shape, dtype)}` (empty if none)."""
        return dict(self._latents)

    @_locked
    def enable_online(self, length):
        """Queue each worker's newly completed window of `length` steps.

        As DreamerV3's `replay.online`: every `length`-th step of a worker
        completes a window of the `length` steps ending there (the windows
        of a worker do not overlap); `sample(..., online=True)` serves the
        queued windows first, oldest first, then draws uniformly. Windows
        evicted before they are served are dropped.

        Args:
            length: the window length (the `batch_length` of the train
                batches, context step included).
        """
        self._online_length = check_size("online length", length)
        self._online.clear()

    @_locked
    def update(self, ids, values):
        """Overwrite stored values of sampled steps (replay context write-back).

        Args:
            ids: int array `[B]`: the stored `_id` of each sequence's first
                step (from `sample(..., ids=True)`).
            values: dict of stored key to `[B, T, ...]` arrays, written into
                the T steps from that step on. Steps evicted since (or past
                the end of their stream) are skipped.

        Returns:
            The number of steps written.

        Raises:
            ValueError: naming the key, if a key is not stored or has
                another per-step shape.
        """
        for key, value in values.items():
            if self._spec is None or key not in self._spec:
                raise ValueError(
                    f"Replay.update: {key!r} is not stored; the replay stores "
                    f"{sorted(self._spec or {})}."
                )
            shape = self._spec[key][0]
            if tuple(np.shape(value)[2:]) != shape:
                raise ValueError(
                    f"Replay.update: {key!r} has shape {np.shape(value)}; "
                    f"expected (B, T, *{shape})."
                )
        values = {key: self._store(key, value) for key, value in values.items()}
        written = 0
        for b, step_id in enumerate(np.asarray(ids).reshape(-1)):
            found = self._locate(int(step_id))
            if found is None:
                continue
            stream, position = found
            length = min(
                len(next(iter(values.values()))[b]),
                stream.start + stream.length - position,
            )
            self._write(stream, position, {k: v[b, :length] for k, v in values.items()})
            written += length
        return written

    @_locked
    def stream(self, worker=0):
        """All live steps of one worker, oldest first.

        Args:
            worker: the worker id.

        Returns:
            A dict of numpy arrays `[N, ...]` (copies).
        """
        worker = worker_id(worker)
        if worker not in self._streams:
            raise ValueError(f"Replay has no worker {worker!r}; it has {self.workers}.")
        stream = self._streams[worker]
        out = {
            key: np.empty((stream.length, *shape), dtype)
            for key, (shape, dtype) in self._spec.items()
        }
        self._copy(stream, stream.start, stream.length, out)
        return out

    @_locked
    def stats(self):
        """Replay metrics.

        Returns:
            `{"replay/size": steps held, "replay/episodes": episode starts
            held, "replay/bytes": bytes of the allocated chunks,
            "replay/memory_gb": the same / 1e9}`.
        """
        return {
            "replay/size": self._size,
            "replay/episodes": self._episodes,
            "replay/bytes": self._nbytes,
            "replay/memory_gb": self._nbytes / 1e9,
        }

    @_locked
    def save(self, directory):
        """Save the replay to a directory: one compressed `.npz` per chunk.

        Every file is written under a temporary name and renamed when
        complete; the `replay.json` manifest is written last, and files of
        older saves are removed only after it. An interrupted save therefore
        leaves the previous save readable. Chunks already saved unchanged are
        not written again, so saving into the same directory is incremental.

        Args:
            directory: a path; created if missing. It holds one replay.

        Returns:
            The directory path.
        """
        return replay_files.save_replay(self, directory)

    @_locked
    def load(self, directory, strict=True):
        """Replace this replay's content with a saved one (to resume or train offline).

        Restores the steps, their order, the sampling RNG state and
        `metadata`. Nothing changes unless loading succeeds.

        Args:
            directory: a directory written by `save`.
            strict: if True (default), an unreadable chunk file raises. If
                False, it is skipped with a warning that names it, every
                readable chunk is kept, and the step after the gap is marked
                `is_first` so no sequence bridges the missing steps.

        Returns:
            This replay.

        Raises:
            CorruptReplayError: naming the file, if the manifest or (with
                `strict`) a chunk file is missing, unreadable or malformed.
            ValueError: if the saved steps exceed this replay's capacity or
                their keys differ from this replay's.
        """
        replay_files.load_replay(self, directory, strict=strict)
        return self

    @classmethod
    def from_directory(
        cls, directory, capacity=None, chunk_size=1024, seed=None, strict=True
    ):
        """Build a replay from a saved directory.

        Args:
            directory: a directory written by `save`.
            capacity: the new replay's capacity; by default the saved
                capacity, or the number of saved steps if larger.
            chunk_size: steps per chunk of the new replay.
            seed: if given, reseeds the sampling after loading; else the
                saved RNG state continues.
            strict: see `load`.

        Returns:
            A `Replay`.

        Examples:
            >>> import tempfile
            >>> replay = Replay(100)
            >>> for t in range(5):
            ...     replay.add({"vector": np.float32([t]), "action": np.float32([1]),
            ...                 "reward": 0.0, "is_first": t == 0, "is_last": False,
            ...                 "is_terminal": False})
            >>> directory = tempfile.mkdtemp()
            >>> _ = replay.save(directory)
            >>> len(Replay.from_directory(directory))
            5
        """
        manifest = replay_files.read_manifest(directory)
        if capacity is None:
            saved = sum(entry["stop"] - entry["start"] for entry in manifest["chunks"])
            capacity = max(int(manifest["capacity"]), saved, 1)
        replay = cls(capacity, chunk_size).load(directory, strict=strict)
        if seed is not None:
            replay._rng = np.random.default_rng(seed)
        return replay

    def _row(self, step):
        if not isinstance(step, dict):
            raise ValueError(
                f"Replay.add needs a dict step, got {type(step).__name__}."
            )
        stored = self._latents if self._spec is None else self._spec
        keys = [
            key
            for key in step
            if not key.startswith(LOG_PREFIX)
            and (key not in LATENT_KEYS or key in stored)
        ]
        if self._spec is None:
            self._spec = {**_infer_spec(step, keys), **self._latents}
        step = dict(step)
        for key in LATENT_KEYS:
            if key in self._spec and key not in step:
                shape, dtype = self._spec[key]
                step[key] = np.zeros(shape, dtype)
            if key in self._spec:
                step[key] = self._store(key, step[key])
                keys = [*keys, key] if key not in keys else keys
        missing = [key for key in self._spec if key not in step]
        extra = [key for key in keys if key not in self._spec]
        if missing or extra:
            raise ValueError(
                f"Replay.add: step keys differ from the replay's: missing "
                f"{missing}, unexpected {extra} (it stores {sorted(self._spec)})."
            )
        row = {}
        for key, (shape, dtype) in self._spec.items():
            value = np.asarray(step[key])
            if value.shape != shape or not np.can_cast(value.dtype, dtype, "same_kind"):
                raise ValueError(
                    f"Replay.add: {key!r} has dtype {value.dtype} and shape "
                    f"{value.shape}; the replay stores dtype {dtype} and shape {shape}."
                )
            row[key] = value
        return row

    def _store(self, key, value):
        """A latent value in its stored dtype (one-hot samples round exactly)."""
        value = np.asarray(value)
        if key in LATENT_KEYS and key in (self._spec or {}):
            dtype = self._spec[key][1]
            if dtype.kind in "iub" and value.dtype.kind == "f":
                value = np.rint(value)
            value = value.astype(dtype)
        return value

    def _add_columns(self, latents):
        """Zero-filled arrays for declared latents the stored steps lack."""
        new = {k: v for k, v in latents.items() if k not in self._spec}
        if not new:
            return
        chunks = [c for s in self._streams.values() for c in s.chunks] + self._free
        for chunk in chunks:
            before = chunk.nbytes
            for key, (shape, dtype) in new.items():
                chunk.arrays[key] = np.zeros((self.chunk_size, *shape), dtype)
            self._nbytes += chunk.nbytes - before
        self._spec.update(new)

    def _queue_online(self, worker, stream):
        added = self._added.get(worker, 0)
        self._added[worker] = added + 1
        length = self._online_length
        if length and added >= length - 1 and added % length == 0:
            start = stream.start + stream.length - length
            self._online.append(self._step_id(stream, start))

    def _online_starts(self, batch_size, batch_length):
        if self._online_length is None:
            raise ValueError(
                "Replay.sample(online=True) needs enable_online(length) first."
            )
        if batch_length != self._online_length:
            raise ValueError(
                f"Replay.sample(online=True): batch_length {batch_length} differs "
                f"from the online window length {self._online_length}."
            )
        starts = []
        while self._online and len(starts) < batch_size:
            found = self._locate(self._online.popleft())
            if found is not None:
                starts.append(found)
        return starts

    def _step_id(self, stream, position):
        k, i = divmod(position, self.chunk_size)
        return int(stream.chunks[k].arrays[_ID][i])

    def _locate(self, step_id):
        """`(stream, position)` of the live step with id `step_id`, or None."""
        for stream in self._streams.values():
            if not stream.length:
                continue
            first = stream.start
            last = stream.start + stream.length - 1
            low, high = self._step_id(stream, first), self._step_id(stream, last)
            if not low <= step_id <= high:
                continue
            for k, chunk in enumerate(stream.chunks):
                lo = first if k == 0 else k * self.chunk_size
                hi = min(last + 1, (k + 1) * self.chunk_size)
                if lo >= hi:
                    continue
                offset = k * self.chunk_size
                ids = chunk.arrays[_ID][lo - offset : hi - offset]
                index = int(np.searchsorted(ids, step_id))
                if index < len(ids) and ids[index] == step_id:
                    return stream, lo + index
        return None

    def _write(self, stream, position, values):
        """Write `values` `[n, ...]` into `stream` from `position` on."""
        k, i = divmod(position, self.chunk_size)
        length, done = len(next(iter(values.values()))), 0
        while done < length:
            n = min(length - done, self.chunk_size - i)
            arrays = stream.chunks[k].arrays
            for key, value in values.items():
                arrays[key][i : i + n] = value[done : done + n]
            done += n
            k, i = k + 1, 0

    def _slot(self, stream):
        position = stream.start + stream.length
        if position == len(stream.chunks) * self.chunk_size:
            stream.chunks.append(self._new_chunk())
        return stream.chunks[-1], position - (len(stream.chunks) - 1) * self.chunk_size

    def _new_chunk(self):
        if self._free:
            chunk = self._free.pop()
        else:
            chunk = _Chunk(self._spec, self.chunk_size)
            self._nbytes += chunk.nbytes
        chunk.uid = self._next_uid
        self._next_uid += 1
        return chunk

    def _evict(self):
        oldest, oldest_id = None, None
        for stream in self._streams.values():
            if stream.length:
                step_id = stream.chunks[0].arrays[_ID][stream.start]
                if oldest_id is None or step_id < oldest_id:
                    oldest, oldest_id = stream, step_id
        self._episodes -= bool(oldest.chunks[0].arrays["is_first"][oldest.start])
        oldest.start += 1
        oldest.length -= 1
        self._size -= 1
        if oldest.start == self.chunk_size:
            self._free.append(oldest.chunks.pop(0))
            oldest.start = 0

    def _extend(self, worker, rows):
        stream = self._streams.get(worker)
        if stream is None:
            stream = self._streams[worker] = _Stream()
        count, done = len(rows[_ID]), 0
        while done < count:
            chunk, index = self._slot(stream)
            n = min(count - done, self.chunk_size - index)
            for key, array in chunk.arrays.items():
                array[index : index + n] = rows[key][done : done + n]
            stream.length += n
            done += n
        self._size += count
        self._episodes += int(np.count_nonzero(rows["is_first"]))
        self._next_id = max(self._next_id, int(rows[_ID].max()) + 1)

    def _counts(self, length):
        return [max(0, stream.length - length + 1) for stream in self._streams.values()]

    def _copy(self, stream, position, length, out):
        """Copy `length` rows of `stream` from `position` into the `out` arrays."""
        k, i = divmod(position, self.chunk_size)
        done = 0
        while done < length:
            n = min(length - done, self.chunk_size - i)
            arrays = stream.chunks[k].arrays
            for key, target in out.items():
                target[done : done + n] = arrays[key][i : i + n]
            done += n
            k, i = k + 1, 0


def check_size(name, value):
    """`value` as an int, if it is an int >= 1; else a ValueError naming it.

    Args:
        name: how to name the value in the error.
        value: the value to check.

    Returns:
        `int(value)`.

    Raises:
        ValueError: `value` is not an int (bools excluded) of at least 1.

    Examples:
        >>> check_size("batch_size", 16)
        16
        >>> check_size("batch_size", 0)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an int >= 1, got 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    return int(value)


def _infer_spec(step, keys):
    missing = [key for key in RESERVED_KEYS if key not in step]
    if missing:
        raise ValueError(
            f"Replay.add: the step has no {missing}; a step holds the obs keys "
            f"plus {list(RESERVED_KEYS)}."
        )
    spec = {}
    for key in keys:
        if key.startswith("_"):
            raise ValueError(f"Replay.add: key {key!r} is reserved (leading '_').")
        value = np.asarray(step[key])
        dtype = value.dtype
        if key in FLAG_KEYS:
            dtype = np.dtype(bool)
        elif key in ("reward", "action") or dtype.kind == "f":
            dtype = np.dtype(np.float32)
        if key in ("reward", *FLAG_KEYS) and value.ndim != 0:
            raise ValueError(
                f"Replay.add: {key!r} must be a scalar, got shape {value.shape}."
            )
        if key == "action" and value.ndim != 1:
            raise ValueError(
                f"Replay.add: 'action' must be a flat float32 vector (one-hot for "
                f"discrete actions), got shape {value.shape}."
            )
        spec[key] = (value.shape, dtype)
    return spec
