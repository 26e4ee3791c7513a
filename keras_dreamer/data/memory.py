"""The replay's memory: bytes per step, capacities given in bytes, the fit check.

A `Replay` allocates its chunks as steps arrive, so a capacity too large for
the machine fails only when the replay has grown, hours into a run. These
functions let a run check at its start that the full replay fits.
"""

import math
import re

import numpy as np

from keras_dreamer.batch import FLAG_KEYS
from keras_dreamer.spaces import as_act_space
from keras_dreamer.spaces import as_obs_space

# The replay keeps one int64 id per step next to the step's values.
ID_BYTES = np.dtype(np.int64).itemsize
# The share of the available memory the replay may take: the model, the
# batches and the libraries need the rest.
MEMORY_SHARE = 0.8
UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def step_bytes(obs_space, act_space, latent_shapes=None):
    """The bytes one step takes in a `Replay`.

    Every obs key at its dtype, the action (float32, its width), the reward
    (float32), the three flags (one byte each), the replay's int64 step id,
    and stored latents when given.

    Args:
        obs_space: dict of obs key to space (or shape, as `kd.WorldModel`
            takes).
        act_space: the action space (`Discrete`, `Box` or an int).
        latent_shapes: optional dict of stored latent key to its per-step
            shape (float32) or `(shape, dtype)` (as
            `kd.data.context.latent_spec` gives).

    Returns:
        An int.

    Examples:
        A 64x64 RGB image, 17 discrete actions:

        >>> from keras_dreamer.spaces import Box, Discrete
        >>> step_bytes({"image": Box((64, 64, 3), 0, 255, "uint8")}, Discrete(17))
        12371
    """
    total = ID_BYTES + 4 + len(FLAG_KEYS)  # id, reward, flags
    for key, space in obs_space.items():
        space = as_obs_space(space, key)
        total += int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize
    total += 4 * as_act_space(act_space).width
    for entry in (latent_shapes or {}).values():
        shape, dtype = entry, np.float32
        if len(entry) == 2 and not isinstance(entry[1], (int, np.integer)):
            shape, dtype = entry
        total += np.dtype(dtype).itemsize * int(np.prod(shape))
    return total


def parse_bytes(text):
    """A byte count from a string such as "8GB", "512MiB" or "1.5 TB".

    Decimal units (kB, MB, GB, TB: powers of 1000) and binary ones (KiB,
    MiB, GiB, TiB: powers of 1024), in any case; no unit means bytes.

    Args:
        text: the string.

    Returns:
        The number of bytes, an int.

    Raises:
        ValueError: the string is not a number with one of those units.

    Examples:
        >>> parse_bytes("8GB"), parse_bytes("512MiB"), parse_bytes("1.5 kb")
        (8000000000, 536870912, 1500)
        >>> parse_bytes("8 gigs")
        Traceback (most recent call last):
        ...
        ValueError: cannot read '8 gigs' as a size in bytes; write e.g. '8GB', '512MiB' or '1.5TB' (units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB).
    """  # noqa: E501
    match = _BYTES.match(str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in UNITS:
        raise ValueError(
            f"cannot read {text!r} as a size in bytes; write e.g. '8GB', '512MiB' "
            "or '1.5TB' (units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)."
        )
    return int(float(match.group(1)) * UNITS[unit])


def capacity_steps(capacity, bytes_per_step):
    """A replay capacity in steps, from steps (an int) or bytes (a string).

    Args:
        capacity: an int number of steps, or a string of bytes ("8GB").
        bytes_per_step: what one step takes (`step_bytes`).

    Returns:
        The capacity in steps (an int; at least 1 for a string).

    Raises:
        ValueError: the string does not parse (see `parse_bytes`).

    Examples:
        >>> capacity_steps(1000, 12371), capacity_steps("1GB", 12371)
        (1000, 80834)
    """
    if isinstance(capacity, str):
        return max(1, parse_bytes(capacity) // int(bytes_per_step))
    return capacity


def available_memory():
    """The memory this machine can give now without swapping, in bytes.

    Returns:
        psutil's `virtual_memory().available`, an int.

    Examples:
        >>> available_memory() > 0
        True
    """
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(capacity, bytes_per_step, available, setting="train.replay_capacity"):
    """Raises unless a full replay fits in `MEMORY_SHARE` of the available memory.

    Args:
        capacity: the replay capacity in steps.
        bytes_per_step: what one step takes (`step_bytes`).
        available: the available memory in bytes (`available_memory`).
        setting: the name of the setting to change, for the message.

    Raises:
        MemoryError: one line with the bytes needed, the capacity in steps
            that fits and the setting to change.

    Examples:
        >>> check_fits(1000, 12371, available=16 * 10**9)  # 12.4 MB: fits
        >>> check_fits(10**9, 12371, available=16 * 10**9)
        Traceback (most recent call last):
        ...
        MemoryError: a full replay of 1,000,000,000 steps x 12,371 bytes = 12.4 TB does not fit in 80% of the 16 GB of available memory; at most 1,034,677 steps fit: lower train.replay_capacity (e.g. train.replay_capacity = 1034677 or '12GB').
    """  # noqa: E501
    needed = int(capacity) * int(bytes_per_step)
    budget = MEMORY_SHARE * available
    if needed <= budget:
        return
    fits = int(budget // bytes_per_step)
    raise MemoryError(
        f"a full replay of {int(capacity):,} steps x {int(bytes_per_step):,} bytes "
        f"= {format_bytes(needed)} does not fit in {MEMORY_SHARE:.0%} of the "
        f"{format_bytes(available)} of available memory; at most {fits:,} steps "
        f"fit: lower {setting} (e.g. {setting} = {fits} or "
        f"'{_whole_units(fits * bytes_per_step)}')."
    )


def _whole_units(count):
    """`count` bytes rounded down to whole GB (or MB below 1 GB), e.g. '12GB'."""
    if count >= 1e9:
        return f"{math.floor(count / 1e9)}GB"
    return f"{max(1, math.floor(count / 1e6))}MB"


def format_bytes(count):
    """A byte count in decimal units, three significant digits.

    Args:
        count: bytes.

    Returns:
        A string.

    Examples:
        >>> format_bytes(12371), format_bytes(16 * 10**9), format_bytes(5)
        ('12.4 kB', '16 GB', '5 B')
    """
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} B"
