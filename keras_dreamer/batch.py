"""The sequence-batch format and its validation.

A batch is a dict of `[B, T, ...]` arrays: every observation key of the
model's observation space (images uint8 `[B, T, H, W, C]`, vectors float32),
`action` float32 `[B, T, A]` (one-hot for discrete actions; integer indices
`[B, T]` are accepted too), `reward` float32 `[B, T]` and the bool flags
`is_first`, `is_last`, `is_terminal` `[B, T]`.
"""

import keras
import ml_dtypes
import numpy as np

from keras_dreamer.spaces import Discrete

# The bool flags of a step.
FLAG_KEYS = ("is_first", "is_last", "is_terminal")
# What an env step carries besides its observation keys.
STEP_KEYS = ("reward", *FLAG_KEYS)
# The keys of a batch (and of a replay step) that are not observations.
RESERVED_KEYS = ("action", *STEP_KEYS)
# Env step keys with this prefix are metrics to log, not data to store.
LOG_PREFIX = "log/"
# Replay context: each step's stored posterior latent, `[B, T + 1, deter]`
# and `[B, T + 1, stoch, classes]`. With them a batch has one leading
# context step, whose latent (and action) start the RSSM; see
# `WorldModel.split_context`.
LATENT_KEYS = ("latent/deter", "latent/stoch")
# With replay context, a train batch's int32 `[B, T + 1]` ticket naming the
# replay rows each sequence came from (the same value along time), so the
# train step's posteriors can be written back to them (`kd.posteriors`).
ROW_KEY = "replay/row"
# The train-log entry in which models report the frames (B * T) of a batch.
FRAMES_KEY = "frames"


def _shape(value):
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = np.shape(value)
    return tuple(None if d is None else int(d) for d in shape)


def _dtype(value):
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return np.asarray(value).dtype
    name = keras.backend.standardize_dtype(dtype)  # any backend's dtype
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def _is_float(dtype):
    return "float" in dtype.name


def _compatible(actual, expected):
    return len(actual) == len(expected) and all(
        a is None or e is None or a == e for a, e in zip(actual, expected)
    )


def check_batch(batch, obs_spaces, act_space, required=None, min_length=1):
    """Raises a `ValueError` naming the first problem of a batch.

    Only static shapes are checked, so it is safe on traced tensors.

    Args:
        batch: the dict to check.
        obs_spaces: dict of observation key to space.
        act_space: the action space.
        required: keys that must be present besides the observation keys and
            `action` (default: `reward`, `is_first`, `is_terminal`).
        min_length: the smallest allowed sequence length T.

    Returns:
        `(B, T)`, either of which may be None for symbolic shapes.

    Raises:
        ValueError: a missing key, or a key with the wrong shape or dtype
            (the message names the key, the expected and the actual value),
            or sequences shorter than `min_length`.

    Examples:
        >>> from keras_dreamer.spaces import Box, Discrete
        >>> spaces = {"image": Box((8, 8, 3), 0, 255, "uint8")}
        >>> batch = {
        ...     "image": np.zeros((2, 5, 8, 8, 3), np.uint8),
        ...     "action": np.zeros((2, 5, 3), np.float32),
        ...     "reward": np.zeros((2, 5), np.float32),
        ...     "is_first": np.zeros((2, 5), bool),
        ...     "is_terminal": np.zeros((2, 5), bool),
        ... }
        >>> check_batch(batch, spaces, Discrete(3))
        (2, 5)
        >>> batch["image"] = np.zeros((2, 5, 16, 16, 3), np.uint8)
        >>> check_batch(batch, spaces, Discrete(3))
        Traceback (most recent call last):
        ...
        ValueError: Batch key 'image' has shape (2, 5, 16, 16, 3), expected ...
    """
    if not isinstance(batch, dict):
        raise ValueError(
            f"A batch must be a dict of arrays, got {type(batch).__name__}."
        )
    required = ("reward", "is_first", "is_terminal") if required is None else required
    keys = [*sorted(obs_spaces), "action", *required]
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(
            f"Batch is missing key(s) {missing}; it has {sorted(batch)} and needs "
            f"{keys}."
        )
    for key in keys:
        if len(_shape(batch[key])) < 2:
            raise ValueError(
                f"Batch entries must be [B, T, ...]; {key!r} has shape "
                f"{_shape(batch[key])}."
            )
    lead = _common_lead(batch, keys)

    def expect(key, tail, dtype_check, dtype_name):
        shape = _shape(batch[key])
        expected = (*lead, *tail)
        if not _compatible(shape, expected):
            raise ValueError(
                f"Batch key {key!r} has shape {shape}, expected {_fmt(expected)} "
                f"(batch, time{', ...' if tail else ''})."
            )
        dtype = _dtype(batch[key])
        if not dtype_check(dtype):
            raise ValueError(
                f"Batch key {key!r} has dtype {dtype}, expected {dtype_name}."
            )

    for key in sorted(obs_spaces):
        space = obs_spaces[key]
        if isinstance(space, Discrete):
            expect(key, (), lambda d: np.issubdtype(d, np.integer), "an integer dtype")
        elif space.dtype == np.uint8:
            expect(key, space.shape, lambda d: d == np.uint8, "uint8")
        else:
            expect(
                key,
                space.shape,
                lambda d: _is_float(d),
                "a float dtype",
            )
    action_shape = _shape(batch["action"])
    if isinstance(act_space, Discrete) and len(action_shape) == 2:
        expect("action", (), lambda d: np.issubdtype(d, np.integer), "integer indices")
    else:
        expect(
            "action",
            (act_space.width,),
            lambda d: _is_float(d),
            "float32",
        )
    for key in required:
        if key == "reward":
            expect(key, (), lambda d: _is_float(d), "float32")
        else:
            expect(
                key, (), lambda d: d == np.bool_ or np.issubdtype(d, np.integer), "bool"
            )
    if lead[1] is not None and lead[1] < min_length:
        raise ValueError(
            f"Batch sequences have length T={lead[1]}, need at least {min_length}."
        )
    return lead


def _common_lead(batch, keys):
    """The `(B, T)` every key agrees on, or a `ValueError` naming the odd ones."""
    leads = {key: _shape(batch[key])[:2] for key in keys}
    groups = []  # [(lead, [keys])], compatible leads merged (None matches all)
    for key, lead in leads.items():
        for index, (known, members) in enumerate(groups):
            if _compatible(lead, known):
                merged = tuple(k if k is not None else n for k, n in zip(known, lead))
                groups[index] = (merged, [*members, key])
                break
        else:
            groups.append((lead, [key]))
    if len(groups) == 1:
        return groups[0][0]
    groups.sort(key=lambda group: -len(group[1]))
    (common, majority), odd = groups[0], groups[1:]
    parts = [
        f"{', '.join(repr(k) for k in members)} "
        f"{'has' if len(members) == 1 else 'have'} {_fmt(lead)}"
        for lead, members in odd
    ]
    raise ValueError(
        "Batch keys disagree on (batch, time): "
        + "; ".join(parts)
        + f", but {', '.join(repr(k) for k in majority)} "
        + f"{'has' if len(majority) == 1 else 'have'} {_fmt(common)}."
    )


def _fmt(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
