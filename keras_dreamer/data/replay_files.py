"""The on-disk format of a `Replay`.

One compressed `.npz` file per chunk plus a `replay.json` manifest, each
written under a temporary name and renamed when complete; reading names the
file at fault. `keras_dreamer.data.replay` is the in-memory store and
sampler; its `save`, `load` and `from_directory` call this module.
"""

import json
import os
import re
import warnings

import numpy as np

MANIFEST = "replay.json"
FORMAT = "keras_dreamer.replay"
VERSION = 1
# The per-step insertion counter, stored beside the step's keys.
ID_KEY = "_id"
_CHUNK_FILE = re.compile(r"^[0-9a-f]{8}-\d{8}-\d+\.npz$")


class CorruptReplayError(ValueError):
    """A saved replay file could not be read; the message names the file.

    A subclass of `ValueError`. `Replay.load(directory, strict=False)` keeps
    every readable chunk and warns instead of raising.

    Examples:
        >>> import tempfile
        >>> directory = tempfile.mkdtemp()
        >>> with open(os.path.join(directory, "replay.json"), "w") as file:
        ...     _ = file.write("{not json")
        >>> try:
        ...     read_manifest(directory)
        ... except CorruptReplayError as error:
        ...     print("replay.json" in str(error))
        True
    """


def save_replay(replay, directory):
    """Writes `replay` to `directory` (see `Replay.save`).

    Args:
        replay: the `Replay` to write.
        directory: the target directory (created; replaced atomically).

    Returns:
        The directory's path.

    Examples:
        >>> import tempfile
        >>> from keras_dreamer.data import Replay
        >>> replay = Replay(100)
        >>> for t in range(3):
        ...     replay.add({"vector": np.float32([t]), "action": np.float32([1]),
        ...                 "reward": 0.0, "is_first": t == 0, "is_last": False,
        ...                 "is_terminal": False})
        >>> directory = save_replay(replay, tempfile.mkdtemp())
        >>> sorted(read_manifest(directory))[:3]
        ['capacity', 'chunk_size', 'chunks']
        >>> len(load_replay(Replay(100), directory))
        3
    """
    os.makedirs(directory, exist_ok=True)
    entries = []
    for worker, stream in replay._streams.items():
        for k, chunk in enumerate(stream.chunks):
            start = stream.start if k == 0 else 0
            stop = min(
                replay.chunk_size, stream.start + stream.length - k * replay.chunk_size
            )
            if stop <= start:
                continue
            name = f"{replay._token}-{chunk.uid:08d}-{stop}.npz"
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                arrays = {key: array[:stop] for key, array in chunk.arrays.items()}
                _atomic_write(path, lambda f, a=arrays: np.savez_compressed(f, **a))
            entries.append(
                {"file": name, "worker": worker, "start": start, "stop": stop}
            )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "capacity": replay.capacity,
        "chunk_size": replay.chunk_size,
        "spec": {
            key: {"shape": list(shape), "dtype": np.dtype(dtype).name}
            for key, (shape, dtype) in (replay._spec or {}).items()
        },
        "chunks": entries,
        "next_id": replay._next_id,
        "next_uid": replay._next_uid,
        "token": replay._token,
        "rng": replay._rng.bit_generator.state,
        "metadata": replay.metadata,
    }
    text = json.dumps(manifest, indent=1)
    _atomic_write(os.path.join(directory, MANIFEST), lambda f: f.write(text.encode()))
    keep = {entry["file"] for entry in entries}
    for name in os.listdir(directory):
        stale = _CHUNK_FILE.match(name) and name not in keep
        if stale or name.endswith(".tmp"):
            os.remove(os.path.join(directory, name))
    return directory


def load_replay(replay, directory, strict=True):
    """Replaces `replay`'s content with the one saved in `directory`.

    Args:
        replay: the `Replay` to fill.
        directory: a directory written by `save_replay`.
        strict: see `Replay.load`, which calls this.

    Returns:
        `replay`.

    Examples:
        See `save_replay`.
    """
    manifest = read_manifest(directory)
    spec = {
        key: (tuple(entry["shape"]), np.dtype(entry["dtype"]))
        for key, entry in manifest["spec"].items()
    }
    if replay._spec is not None and spec and spec != replay._spec:
        raise ValueError(
            f"Replay in {directory} stores {_spec_text(spec)}, but this "
            f"replay stores {_spec_text(replay._spec)}."
        )
    total = sum(entry["stop"] - entry["start"] for entry in manifest["chunks"])
    if total > replay.capacity:
        raise ValueError(
            f"Replay in {directory} holds {total} steps, more than this "
            f"replay's capacity {replay.capacity}; use Replay(capacity>={total}) "
            "or Replay.from_directory."
        )
    for key, entry in replay._latents.items():
        if key in spec and spec[key] != entry:
            raise ValueError(
                f"Replay in {directory} stores {key!r} as "
                f"{_spec_text({key: spec[key]})}, but this replay declares "
                f"{_spec_text({key: entry})}."
            )
    fresh = type(replay)(replay.capacity, replay.chunk_size)
    fresh._spec = spec or replay._spec
    fresh._latents = dict(replay._latents)
    fresh._online_length = replay._online_length
    skipped, gaps = [], set()
    for entry in manifest["chunks"]:
        path = os.path.join(directory, entry["file"])
        worker = worker_id(entry["worker"])
        try:
            rows = _read_chunk(path, entry, spec)
        except CorruptReplayError:
            if strict:
                raise
            skipped.append(path)
            gaps.add(worker)
            continue
        if worker in gaps:
            rows["is_first"][0] = True
            gaps.discard(worker)
        fresh._extend(worker, rows)
    if skipped:
        warnings.warn(
            f"Replay.load skipped {len(skipped)} unreadable file(s): "
            f"{', '.join(skipped)}. All readable chunks were loaded; the step "
            "after each gap is marked is_first.",
            stacklevel=2,
        )
    fresh._next_id = max(fresh._next_id, int(manifest["next_id"]))
    fresh._next_uid = max(fresh._next_uid, int(manifest["next_uid"]))
    fresh._token = manifest["token"]
    fresh._rng.bit_generator.state = manifest["rng"]
    fresh.metadata = manifest.get("metadata", {})
    if fresh._spec is not None and fresh._latents:
        fresh._add_columns(fresh._latents)  # saved without replay context
    state = vars(fresh)
    del state["_lock"]
    replay.__dict__.update(state)  # adopt the loaded state at once
    return replay


def worker_id(worker):
    """A replay worker id as stored: an int or a string.

    Args:
        worker: an int (numpy ints too) or a string.

    Returns:
        The id as a Python int or str.

    Examples:
        >>> worker_id(np.int64(3)), worker_id("env-1")
        (3, 'env-1')
    """
    if isinstance(worker, np.integer):
        worker = int(worker)
    if isinstance(worker, bool) or not isinstance(worker, (int, str)):
        raise ValueError(f"Replay worker ids must be ints or strings, got {worker!r}.")
    return worker


def _spec_text(spec):
    return ", ".join(
        f"{key} {np.dtype(d).name}{list(s)}" for key, (s, d) in spec.items()
    )


def _atomic_write(path, write):
    temp = path + ".tmp"
    try:
        with open(temp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def read_manifest(directory):
    """The checked `replay.json` manifest of a saved replay, as a dict.

    Args:
        directory: a directory written by `save_replay`.

    Returns:
        The manifest dict.

    Raises:
        CorruptReplayError: naming the file, if it is missing or malformed.

    Examples:
        See `save_replay`.
    """
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as file:
            manifest = json.load(file)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        if manifest.get("version") != VERSION:
            raise ValueError(f"version {manifest.get('version')}, expected {VERSION}")
        for key in (
            "capacity",
            "spec",
            "chunks",
            "next_id",
            "next_uid",
            "token",
            "rng",
        ):
            if key not in manifest:
                raise ValueError(f"no {key!r} entry")
        for entry in manifest["chunks"]:
            if not {"file", "worker", "start", "stop"} <= set(entry):
                raise ValueError(f"malformed chunk entry {entry!r}")
    except FileNotFoundError:
        raise CorruptReplayError(
            f"No saved replay in {directory}: {path} is missing."
        ) from None
    except (OSError, ValueError) as err:
        raise CorruptReplayError(
            f"Replay manifest {path} is unreadable: {err}."
        ) from None
    return manifest


def _read_chunk(path, entry, spec):
    start, stop = entry["start"], entry["stop"]
    rows = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key, (shape, dtype) in {
                **spec,
                ID_KEY: ((), np.dtype(np.int64)),
            }.items():
                if key not in data:
                    raise ValueError(f"it has no {key!r} array")
                array = data[key]
                if array.shape != (stop, *shape) or array.dtype != dtype:
                    raise ValueError(
                        f"{key!r} has dtype {array.dtype} and shape {array.shape}, "
                        f"expected {np.dtype(dtype).name} {(stop, *shape)}"
                    )
                rows[key] = array[start:stop]
    except Exception as err:  # zip, zlib, format and OS errors alike
        raise CorruptReplayError(
            f"Replay file {path} is corrupt or unreadable ({type(err).__name__}: "
            f"{err}). Restore it, or load with strict=False to keep every "
            "readable chunk."
        ) from None
    return rows
