"""World-model size presets and hyperparameter defaults (DreamerV3's configs).

Every preset sets the RSSM widths, the CNN depth and the MLP width; the rule
of the reference sizes is `deter = 8 * hidden`, `classes = depth =
hidden / 16`, `units = hidden`, with 32 latents throughout. The names are the
reference's approximate agent sizes; the world model alone is smaller (see
`docs/concepts.md` for the exact parameter counts).
"""

import copy

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
