"""World-model size presets and hyperparameter defaults (DreamerV3's configs).

Every preset sets the RSSM widths, the CNN depth and the MLP width; the rule
of the reference sizes is `deter = 8 * hidden`, `classes = depth =
hidden / 16`, `units = hidden`, with 32 latents throughout. The names are the
reference's approximate agent sizes; the world model alone is smaller (see
`docs/concepts.md` for the exact parameter counts).
"""

import copy
import difflib
import math
import numbers
from collections.abc import Mapping

# The defaults of every hyperparameter `WorldModel` takes, before a preset.
DEFAULTS = {
    # RSSM (dyn.rssm in DreamerV3's configs.yaml).
    "deter": 8192,
    "hidden": 1024,
    "stoch": 32,
    "classes": 64,
    "blocks": 8,
    "dynlayers": 1,
    "imglayers": 2,
    "obslayers": 1,
    "unimix": 0.01,
    "absolute": False,
    "free_nats": 1.0,
    # Encoder / decoder (enc.simple, dec.simple).
    "depth": 64,
    "mults": (2, 3, 4, 4),
    "kernel": 5,
    "units": 1024,
    "mlp_layers": 3,
    "bspace": 8,
    "symlog_inputs": True,
    # Reward and continue heads.
    "head_layers": 1,
    "bins": 255,
    "horizon": 333,
    # Shared.
    "act": "silu",
    "unroll": 1,
    # Loss scales: `rec` applies to every decoded key unless the key itself is
    # listed. DreamerV3 2023 ("v1") used dyn 0.5, rep 0.1.
    "loss_scales": {"rec": 1.0, "rew": 1.0, "con": 1.0, "dyn": 1.0, "rep": 0.1},
}


def _size(hidden):
    return {
        "deter": 8 * hidden,
        "hidden": hidden,
        "classes": hidden // 16,
        "depth": hidden // 16,
        "units": hidden,
    }


PRESETS = {
    "debug": {
        "stoch": 2,
        "classes": 4,
        "deter": 8,
        "hidden": 3,
        "blocks": 4,
        "depth": 2,
        "units": 8,
        "bins": 5,
        "mlp_layers": 1,
        "head_layers": 1,
    },
    "size1m": _size(64),
    "size12m": _size(256),
    "size25m": _size(384),
    "size50m": _size(512),
    "size100m": _size(768),
    "size200m": _size(1024),
    "size400m": _size(1536),
}

# The 2023 DreamerV3 loss scales, for comparisons with older results.
V1_LOSS_SCALES = {"rec": 1.0, "rew": 1.0, "con": 1.0, "dyn": 0.5, "rep": 0.1}


# The agent's hyperparameters (DreamerV3's actor-critic), on top of
# `DEFAULTS`. The actor and critic use the preset's `units`; `loss_scales`
# of an agent also takes `policy`, `value` and `repval`.
AGENT_DEFAULTS = {
    "actor_layers": 3,
    "critic_layers": 3,
    "actor_unimix": 0.0,  # the reference's code: no mix (its paper: 1%)
    "actor_minstd": 0.1,
    "actor_maxstd": 1.0,
    "actor_outscale": 0.01,
    "critic_outscale": 0.0,
    "critic_bins": 255,
    "imag_length": 15,
    "lam": 0.95,
    "actent": 3e-4,
    "slowreg": 1.0,
    "slow_rate": 0.02,
    "slow_every": 1,
    "retnorm_low": 5.0,
    "retnorm_high": 95.0,
    "retnorm_rate": 0.01,
    "retnorm_limit": 1.0,
    "eval_mode": "sample",  # the reference samples in evaluation; or "mode"
}

AGENT_LOSS_SCALES = {"policy": 1.0, "value": 1.0, "repval": 0.3}

AGENT_PRESETS = {
    "debug": {"actor_layers": 1, "critic_layers": 1, "critic_bins": 5},
}


def resolve_agent(preset=None, **overrides):
    """The world-model and agent hyperparameters of an agent preset.

    Args:
        preset: a name from `PRESETS`, or None for the reference defaults.
        **overrides: any key of `DEFAULTS` or `AGENT_DEFAULTS`; `loss_scales`
            may set world-model and agent scales (`policy`, `value`,
            `repval`).

    Returns:
        `(world_model_overrides, agent_config)`: the overrides to pass to
        the world model, and a full agent dict (every key of
        `AGENT_DEFAULTS` plus `loss_scales` with the three agent scales).

    Raises:
        ValueError: for an unknown preset, hyperparameter or `eval_mode`,
            or an `imag_length` below 1.

    Examples:
        >>> wm, agent = resolve_agent("size1m", actent=1e-3, loss_scales={"repval": 0})
        >>> wm, agent["actent"], agent["loss_scales"]["repval"]
        ({}, 0.001, 0)
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(
            f"Unknown preset {preset!r}; valid presets are: {', '.join(PRESETS)}."
        )
    overrides = dict(overrides)
    scales = dict(overrides.pop("loss_scales", None) or {})
    agent_scales = {k: scales.pop(k) for k in AGENT_LOSS_SCALES if k in scales}
    agent_keys = {k: overrides.pop(k) for k in AGENT_DEFAULTS if k in overrides}
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown agent hyperparameter(s) {unknown}; valid ones are: "
            f"{', '.join(sorted({*DEFAULTS, *AGENT_DEFAULTS}))}."
        )
    if scales:
        overrides["loss_scales"] = scales
    config = copy.deepcopy(AGENT_DEFAULTS)
    config.update(AGENT_PRESETS.get(preset, {}))
    config.update(agent_keys)
    config["loss_scales"] = {**AGENT_LOSS_SCALES, **agent_scales}
    if config["eval_mode"] not in ("sample", "mode"):
        raise ValueError(
            f"eval_mode must be 'sample' or 'mode', got {config['eval_mode']!r}."
        )
    length = config["imag_length"]
    if (
        isinstance(length, bool)
        or not isinstance(length, numbers.Integral)
        or length < 1
    ):
        raise ValueError(
            "imag_length must be an int >= 1 (imagined steps per start state), "
            f"got {length!r}."
        )
    return overrides, config


def check_loss_scales(scales, obs_keys=(), agent=False):
    """Refuses a loss scale that no loss term has, or one that is not >= 0.

    A world model's loss terms are `rec` (every decoded observation key
    unless the key is listed itself), one per observation key, `rew`, `con`,
    `dyn` and `rep`; an agent adds `policy`, `value` and `repval`. A
    misspelled key would otherwise be silently ignored.

    Args:
        scales: the `loss_scales` override (a dict of key -> scale), or None.
        obs_keys: the observation keys the model decodes.
        agent: also accept the agent's scales.

    Raises:
        ValueError: `scales` is not a dict, a key is unknown (the message
            names it, suggests the closest valid key and lists the valid
            ones) or a scale is not a finite number >= 0.

    Examples:
        >>> check_loss_scales({"image": 2.0, "dyn": 0.5}, obs_keys=["image"])
        >>> try:
        ...     check_loss_scales({"imgae": 2.0}, obs_keys=["image"])
        ... except ValueError as error:
        ...     print(error)
        Unknown loss scale 'imgae' (did you mean 'image'?); valid keys: con, dyn, image, rec, rep, rew.
    """  # noqa: E501
    if scales is None:
        return
    if not isinstance(scales, Mapping):
        raise ValueError(
            f"loss_scales must be a dict of loss name -> scale, got {scales!r}."
        )
    valid = {*DEFAULTS["loss_scales"], *obs_keys}
    if agent:
        valid.update(AGENT_LOSS_SCALES)
    for key, value in scales.items():
        if key not in valid:
            close = difflib.get_close_matches(str(key), sorted(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"Unknown loss scale {key!r}{hint}; valid keys: "
                f"{', '.join(sorted(valid))}."
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"loss_scales[{key!r}] must be a finite number >= 0, got {value!r}."
            )


def resolve(preset=None, **overrides):
    """The full hyperparameter dict of a preset with overrides applied.

    Args:
        preset: a name from `PRESETS`, or None for the reference defaults
            (size200m).
        **overrides: any key of `DEFAULTS`. `loss_scales` is merged into the
            default scales.

    Returns:
        A new dict with every key of `DEFAULTS`.

    Raises:
        ValueError: for an unknown preset name (the message lists the valid
            ones) or an unknown hyperparameter.

    Examples:
        >>> resolve("size12m", hidden=128)["deter"]
        2048
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(
            f"Unknown preset {preset!r}; valid presets are: {', '.join(PRESETS)}."
        )
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown world-model hyperparameter(s) {unknown}; valid ones are: "
            f"{', '.join(sorted(DEFAULTS))}."
        )
    config = copy.deepcopy(DEFAULTS)
    if preset is not None:
        config.update(copy.deepcopy(PRESETS[preset]))
    scales = overrides.pop("loss_scales", None)
    config.update(overrides)
    if scales:
        config["loss_scales"] = {**config["loss_scales"], **scales}
    config["mults"] = tuple(config["mults"])
    return config
