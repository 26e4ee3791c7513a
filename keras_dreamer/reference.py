"""The reference DreamerV3's checkpoints: reading, the parameter-name map, import.

The reference is danijar/dreamerv3 at commit e3f0224. Its training script
writes `LOGDIR/config.yaml` and `LOGDIR/ckpt/<timestamp>/agent.pkl` (plain
pickles of numpy arrays, named by ninjax scope paths such as
`dyn/dynin0/kernel`). This module reads them with numpy and the standard
library only (no jax, no reference code), translates the config into
`kd.Agent` arguments (an error names every key it cannot honour), and
copies every parameter through one name map, `name_map`, which is also what
the parity tests use. The map is documented in `docs/reference.md`.

Two layouts differ from the reference's, and the map permutes them:

- the posterior's first layer (`dyn/obs0/kernel`) reads `concat(deter,
  tokens)`; the reference's tokens are the vector MLP's output followed by
  the image CNN's, ours the image CNN's followed by the vector MLP's: its
  rows are permuted;
- the decoder's vector MLP (`dec/mlp/linear0/kernel`) reads `concat(stoch,
  deter)` in the reference, `concat(deter, stoch)` here: rows permuted.
"""

import dataclasses
import io
import logging
import os
import pickle
import re

import numpy as np

REFERENCE = "danijar/dreamerv3@e3f0224"


class ReferenceCheckpointError(ValueError):
    """A reference checkpoint or config that cannot be imported (says why).

    Examples:
        >>> read_checkpoint("/no/such/run")
        Traceback (most recent call last):
        ...
        keras_dreamer.reference.ReferenceCheckpointError: ...no such directory.
    """


# ----------------------------------------------------------------- reading


@dataclasses.dataclass
class ReferenceCheckpoint:
    """What the reference's training script wrote.

    Args:
        config: the run's `config.yaml` as nested dicts.
        params: parameter name -> numpy array (model, optimizer state,
            counters), as in `agent.pkl`.
        step: the env-step counter of `step.pkl` (None if absent).
        path: the checkpoint folder read.

    Examples:
        >>> ReferenceCheckpoint({"agent": {}}, {}, 100, "run/ckpt/x").step
        100
    """

    config: dict
    params: dict
    step: int | None
    path: str


def read_checkpoint(directory):
    """Reads a reference checkpoint: a run's logdir, or one `ckpt/<name>` folder.

    Args:
        directory: `LOGDIR` (the newest checkpoint is `LOGDIR/ckpt/latest`)
            or `LOGDIR/ckpt/<name>`; the run's `config.yaml` sits in LOGDIR.

    Returns:
        A `ReferenceCheckpoint`.

    Raises:
        ReferenceCheckpointError: a missing or unreadable file, named.

    Examples:
        >>> read_checkpoint("/no/such/run")
        Traceback (most recent call last):
        ...
        keras_dreamer.reference.ReferenceCheckpointError: ...no such directory.
    """
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise ReferenceCheckpointError(f"{directory}: no such directory.")
    if os.path.isfile(os.path.join(directory, "agent.pkl")):
        folder = directory
        logdir = os.path.dirname(os.path.dirname(directory))
    else:
        logdir = directory
        latest = os.path.join(directory, "ckpt", "latest")
        if not os.path.isfile(latest):
            raise ReferenceCheckpointError(
                f"{directory}: not a reference run (no ckpt/latest) nor a "
                "checkpoint folder (no agent.pkl)."
            )
        with open(latest) as file:
            name = file.read().strip()
        folder = os.path.join(directory, "ckpt", name)
    config_path = os.path.join(logdir, "config.yaml")
    if not os.path.isfile(config_path):
        raise ReferenceCheckpointError(
            f"{config_path}: missing; the checkpoint needs its run's config.yaml "
            "(the reference writes it next to ckpt/)."
        )
    if not os.path.isfile(os.path.join(folder, "done")):
        raise ReferenceCheckpointError(
            f"{folder}: incomplete checkpoint (no 'done' file; the reference "
            "writes it last)."
        )
    saved = load_pickle(os.path.join(folder, "agent.pkl"))
    if not isinstance(saved, dict) or not isinstance(saved.get("params"), dict):
        raise ReferenceCheckpointError(
            f"{folder}/agent.pkl: expected a dict with 'params', got "
            f"{type(saved).__name__}."
        )
    step_path = os.path.join(folder, "step.pkl")
    step = load_pickle(step_path) if os.path.isfile(step_path) else None
    params = {str(k): np.asarray(v) for k, v in saved["params"].items()}
    return ReferenceCheckpoint(read_yaml(config_path), params, step, folder)


# Only numpy's array and dtype reconstructors may be loaded: a pickle is code.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a reference checkpoint holds "
                "numpy arrays only"
            )
        return super().find_class(module, name)


def load_pickle(path):
    """A pickle of numpy arrays and plain containers (nothing else is loaded).

    Args:
        path: the `.pkl` file.

    Returns:
        The unpickled object.

    Raises:
        ReferenceCheckpointError: truncated, corrupt or holding other objects.

    Examples:
        >>> import os, pickle, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "agent.pkl")
        >>> with open(path, "wb") as file:
        ...     pickle.dump({"params": {"w": np.ones(2, "float32")}}, file)
        >>> load_pickle(path)["params"]["w"].tolist()
        [1.0, 1.0]
    """
    try:
        with open(path, "rb") as file:
            return _ArrayUnpickler(io.BytesIO(file.read())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ReferenceCheckpointError(
            f"{path}: cannot read ({type(error).__name__}: {error}); the file is "
            "truncated, corrupt or not a reference checkpoint."
        ) from None


def read_yaml(path):
    r"""Reads the YAML that the reference's `elements.Config.save` writes.

    That is block mappings and lists, flow mappings and lists (also spread
    over several lines), and plain or quoted scalars; anything else is an
    error naming the line. (Written here so that importing needs nothing but
    numpy and the standard library.)

    Args:
        path: the YAML file.

    Returns:
        Nested dicts and lists.

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "config.yaml")
        >>> with open(path, "w") as file:
        ...     _ = file.write("agent:\n  dyn: {typ: rssm, rssm: {deter: 64,\n"
        ...                    "      blocks: 4}}\n  imag_length: 15\n")
        >>> read_yaml(path)
        {'agent': {'dyn': {'typ': 'rssm', 'rssm': {'deter': 64, 'blocks': 4}},
                   'imag_length': 15}}
    """
    with open(path) as file:
        lines = file.read().splitlines()
    rows, pending = [], None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if pending is not None:  # the continuation of a flow collection
            pending[2] += " " + line.strip()
        else:
            pending = [number, len(line) - len(line.lstrip(" ")), line.strip()]
        if _flow_depth(pending[2]) == 0:
            rows.append(tuple(pending))
            pending = None
    if pending is not None:
        raise ReferenceCheckpointError(f"{path}:{pending[0]}: unclosed bracket.")
    value, index = _yaml_block(rows, 0, 0, path) if rows else ({}, 0)
    if index != len(rows):
        raise ReferenceCheckpointError(f"{path}:{rows[index][0]}: unexpected indent.")
    return value if isinstance(value, dict) else {}


def _flow_depth(text):
    """Open brackets of the flow collection a line's value starts, if any."""
    match = re.match(r"^(?:- |[^:]+:\s+)?([\[{].*)$", text)
    if not match:
        return 0
    depth, quote = 0, None
    for char in match.group(1):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth


def _yaml_block(rows, index, indent, path):
    if rows[index][2].startswith("- "):
        items = []
        while index < len(rows) and rows[index][1] == indent:
            number, _, text = rows[index]
            if not text.startswith("- "):
                raise ReferenceCheckpointError(f"{path}:{number}: expected '- '.")
            items.append(_yaml_value(text[2:].strip(), path, number))
            index += 1
        return items, index
    mapping = {}
    while index < len(rows) and rows[index][1] == indent:
        number, _, text = rows[index]
        key, rest = _yaml_key(text, path, number)
        index += 1
        if rest:
            mapping[key] = _yaml_value(rest, path, number)
        elif index < len(rows) and rows[index][1] > indent:
            mapping[key], index = _yaml_block(rows, index, rows[index][1], path)
        elif index < len(rows) and rows[index][2].startswith("- "):
            mapping[key], index = _yaml_block(rows, index, indent, path)
        else:
            mapping[key] = None
    return mapping, index


def _yaml_key(text, path, number):
    match = re.match(r"^('[^']*'|\"[^\"]*\"|[^:'\"]+?):(?:\s+(.*))?$", text)
    if not match:
        raise ReferenceCheckpointError(f"{path}:{number}: cannot parse {text!r}.")
    return match.group(1).strip("'\""), (match.group(2) or "").strip()


def _yaml_value(text, path, number):
    if text.startswith(("[", "{")):
        items = _split_flow(text[1:-1], path, number)
        if text.startswith("["):
            return [_yaml_value(item, path, number) for item in items]
        pairs = (_yaml_key(item, path, number) for item in items)
        return {key: _yaml_value(value, path, number) for key, value in pairs}
    if text.startswith(("&", "*", "|", ">", "!")):
        raise ReferenceCheckpointError(
            f"{path}:{number}: unsupported YAML {text!r} (expected the "
            "reference's config.yaml)."
        )
    return _yaml_scalar(text)


def _split_flow(text, path, number):
    items, depth, quote, start = [], 0, None, 0
    for position, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:position].strip())
            start = position + 1
    if depth or quote:
        raise ReferenceCheckpointError(f"{path}:{number}: unbalanced {text!r}.")
    last = text[start:].strip()
    return items + [last] if last else items


def _yaml_scalar(text):
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~", ""):
        return None
    if lowered in (".inf", "+.inf", "-.inf", ".nan"):
        return float(lowered.replace(".", ""))
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        return float(text)
    return text


# ------------------------------------------------------------------ config


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


# How each `agent.*` key of the reference's config becomes ours. Values:
# ("kwarg", name): the kd.Agent argument; ("optimizer", name): LaProp's;
# ("scale", name): a loss scale; ("equal", value): only that value is
# supported; ("same", key): must equal another key (we have one knob for
# both); ("ignore", why): does not change a trained agent's function.
_INIT_ONLY = ("ignore", "initialisation only; the weights are imported")
_CONFIG_KEYS = {
    "dyn.typ": ("equal", "rssm"),
    "dyn.rssm.deter": ("kwarg", "deter"),
    "dyn.rssm.hidden": ("kwarg", "hidden"),
    "dyn.rssm.stoch": ("kwarg", "stoch"),
    "dyn.rssm.classes": ("kwarg", "classes"),
    "dyn.rssm.blocks": ("kwarg", "blocks"),
    "dyn.rssm.dynlayers": ("kwarg", "dynlayers"),
    "dyn.rssm.imglayers": ("kwarg", "imglayers"),
    "dyn.rssm.obslayers": ("kwarg", "obslayers"),
    "dyn.rssm.unimix": ("kwarg", "unimix"),
    "dyn.rssm.absolute": ("kwarg", "absolute"),
    "dyn.rssm.free_nats": ("kwarg", "free_nats"),
    "dyn.rssm.act": ("same", "enc.simple.act"),
    "dyn.rssm.norm": ("equal", "rms"),
    "dyn.rssm.outscale": _INIT_ONLY,
    "dyn.rssm.winit": _INIT_ONLY,
    "enc.typ": ("equal", "simple"),
    "enc.simple.depth": ("kwarg", "depth"),
    "enc.simple.mults": ("kwarg", "mults"),
    "enc.simple.kernel": ("kwarg", "kernel"),
    "enc.simple.units": ("kwarg", "units"),
    "enc.simple.layers": ("kwarg", "mlp_layers"),
    "enc.simple.act": ("kwarg", "act"),
    "enc.simple.symlog": ("kwarg", "symlog_inputs"),
    "enc.simple.norm": ("equal", "rms"),
    "enc.simple.outer": ("equal", False),
    "enc.simple.strided": ("equal", False),
    "enc.simple.winit": _INIT_ONLY,
    "dec.typ": ("equal", "simple"),
    "dec.simple.depth": ("same", "enc.simple.depth"),
    "dec.simple.mults": ("same", "enc.simple.mults"),
    "dec.simple.kernel": ("same", "enc.simple.kernel"),
    "dec.simple.units": ("same", "enc.simple.units"),
    "dec.simple.layers": ("same", "enc.simple.layers"),
    "dec.simple.act": ("same", "enc.simple.act"),
    "dec.simple.bspace": ("kwarg", "bspace"),
    "dec.simple.norm": ("equal", "rms"),
    "dec.simple.outer": ("equal", False),
    "dec.simple.strided": ("equal", False),
    "dec.simple.symlog": ("equal", True),
    "dec.simple.outscale": _INIT_ONLY,
    "dec.simple.winit": _INIT_ONLY,
    "rewhead.layers": ("kwarg", "head_layers"),
    "rewhead.units": ("same", "enc.simple.units"),
    "rewhead.bins": ("kwarg", "bins"),
    "rewhead.act": ("same", "enc.simple.act"),
    "rewhead.norm": ("equal", "rms"),
    "rewhead.output": ("equal", "symexp_twohot"),
    "rewhead.outscale": _INIT_ONLY,
    "rewhead.winit": _INIT_ONLY,
    "conhead.layers": ("same", "rewhead.layers"),
    "conhead.units": ("same", "enc.simple.units"),
    "conhead.act": ("same", "enc.simple.act"),
    "conhead.norm": ("equal", "rms"),
    "conhead.output": ("equal", "binary"),
    "conhead.outscale": _INIT_ONLY,
    "conhead.winit": _INIT_ONLY,
    "policy.layers": ("kwarg", "actor_layers"),
    "policy.units": ("same", "enc.simple.units"),
    "policy.act": ("same", "enc.simple.act"),
    "policy.norm": ("equal", "rms"),
    "policy.minstd": ("kwarg", "actor_minstd"),
    "policy.maxstd": ("kwarg", "actor_maxstd"),
    "policy.outscale": ("kwarg", "actor_outscale"),
    "policy.unimix": ("ignore", "the reference's categorical policy head mixes none"),
    "policy.winit": _INIT_ONLY,
    "value.layers": ("kwarg", "critic_layers"),
    "value.units": ("same", "enc.simple.units"),
    "value.act": ("same", "enc.simple.act"),
    "value.norm": ("equal", "rms"),
    "value.bins": ("kwarg", "critic_bins"),
    "value.output": ("equal", "symexp_twohot"),
    "value.outscale": ("kwarg", "critic_outscale"),
    "value.winit": _INIT_ONLY,
    "policy_dist_disc": ("equal", "categorical"),
    "policy_dist_cont": ("equal", "bounded_normal"),
    "imag_length": ("kwarg", "imag_length"),
    "imag_last": ("equal", 0),
    "horizon": ("kwarg", "horizon"),
    "contdisc": ("equal", True),
    "ac_grads": ("equal", False),
    "reward_grad": ("equal", True),
    "repval_loss": ("equal", True),
    "repval_grad": ("equal", True),
    "imag_loss.slowtar": ("equal", False),
    "imag_loss.lam": ("kwarg", "lam"),
    "imag_loss.actent": ("kwarg", "actent"),
    "imag_loss.slowreg": ("kwarg", "slowreg"),
    "repl_loss.slowtar": ("equal", False),
    "repl_loss.lam": ("same", "imag_loss.lam"),
    "repl_loss.slowreg": ("same", "imag_loss.slowreg"),
    "slowvalue.rate": ("kwarg", "slow_rate"),
    "slowvalue.every": ("kwarg", "slow_every"),
    "retnorm.impl": ("equal", "perc"),
    "retnorm.rate": ("kwarg", "retnorm_rate"),
    "retnorm.limit": ("kwarg", "retnorm_limit"),
    "retnorm.perclo": ("kwarg", "retnorm_low"),
    "retnorm.perchi": ("kwarg", "retnorm_high"),
    "retnorm.debias": ("equal", False),
    "valnorm.impl": ("equal", "none"),
    "valnorm.rate": ("ignore", "valnorm is off"),
    "valnorm.limit": ("ignore", "valnorm is off"),
    "advnorm.impl": ("equal", "none"),
    "advnorm.rate": ("ignore", "advnorm is off"),
    "advnorm.limit": ("ignore", "advnorm is off"),
    "opt.lr": ("optimizer", "learning_rate"),
    "opt.agc": ("optimizer", "agc"),
    "opt.eps": ("optimizer", "epsilon"),
    "opt.beta1": ("optimizer", "beta_1"),
    "opt.beta2": ("optimizer", "beta_2"),
    "opt.warmup": ("optimizer", "warmup"),
    "opt.momentum": ("equal", True),
    "opt.nesterov": ("equal", False),
    "opt.wd": ("equal", 0.0),
    "opt.wdregex": ("ignore", "weight decay is off"),
    "opt.schedule": ("equal", "const"),
    "opt.anneal": ("equal", 0),
    "report": ("ignore", "reporting"),
    "report_gradnorms": ("ignore", "reporting"),
}
for _key in ("rec", "rew", "con", "dyn", "rep", "policy", "value", "repval"):
    _CONFIG_KEYS[f"loss_scales.{_key}"] = ("scale", _key)
_COMPUTE_DTYPES = {
    "float32": "float32",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}


@dataclasses.dataclass
class ReferenceSettings:
    """The reference config translated into keras-dreamer's terms.

    Args:
        agent: keyword arguments of `kd.Agent` (besides the spaces).
        optimizer: keyword arguments of `kd.optimizers.LaProp`.
        dtype: the Keras dtype policy of the reference's compute dtype.
        notes: settings of the reference's training loop that a
            keras-dreamer run sets its own way (one line each).

    Examples:
        >>> translate_config({"agent": {"imag_length": 8}}).agent["imag_length"]
        8
    """

    agent: dict
    optimizer: dict
    dtype: str
    notes: list


def translate_config(config, source="config.yaml"):
    """The `kd.Agent` and `LaProp` arguments of a reference config.

    Args:
        config: the reference's config as nested dicts (`read_yaml`).
        source: the file name used in error messages.

    Returns:
        A `ReferenceSettings`.

    Raises:
        ReferenceCheckpointError: naming every `agent.*` key that is unknown
            or set to a value keras-dreamer does not support.

    Examples:
        >>> settings = translate_config(
        ...     {"agent": {"dyn": {"rssm": {"deter": 64}}, "opt": {"lr": 1e-4}},
        ...      "jax": {"compute_dtype": "bfloat16"}})
        >>> settings.agent, settings.optimizer, settings.dtype
        ({'deter': 64, 'loss_scales': {}}, {'learning_rate': 0.0001}, 'mixed_bfloat16')
        >>> translate_config({"agent": {"contdisc": False}})
        Traceback (most recent call last):
        ...
        keras_dreamer.reference.ReferenceCheckpointError: config.yaml: cannot
        import: agent.contdisc: False is not supported (keras-dreamer implements
        True).
    """
    if not isinstance(config.get("agent"), dict):
        raise ReferenceCheckpointError(f"{source}: no 'agent' section.")
    flat = _flatten(config["agent"])
    problems, agent, optimizer, scales = [], {}, {}, {}
    for key, value in sorted(flat.items()):
        rule = _CONFIG_KEYS.get(key)
        if rule is None:
            problems.append(f"agent.{key}: unknown to keras-dreamer (value {value!r})")
            continue
        kind, target = rule
        if kind == "kwarg":
            agent[target] = tuple(value) if isinstance(value, list) else value
        elif kind == "optimizer":
            optimizer[target] = value
        elif kind == "scale":
            scales[target] = value
        elif kind == "equal" and value != target:
            problems.append(
                f"agent.{key}: {value!r} is not supported (keras-dreamer "
                f"implements {target!r})"
            )
        elif kind == "same" and target in flat and value != flat[target]:
            problems.append(
                f"agent.{key}: {value!r} differs from agent.{target} "
                f"{flat[target]!r} (keras-dreamer has one setting for both)"
            )
    if problems:
        raise ReferenceCheckpointError(
            f"{source}: cannot import: " + "; ".join(problems) + "."
        )
    agent["loss_scales"] = scales
    if "warmup" in optimizer:
        optimizer["warmup"] = int(optimizer["warmup"])
    if "slow_every" in agent:
        agent["slow_every"] = int(agent["slow_every"])
    dtype = config.get("jax", {}).get("compute_dtype", "float32")
    if dtype not in _COMPUTE_DTYPES:
        raise ReferenceCheckpointError(
            f"{source}: jax.compute_dtype {dtype!r} is not supported (expected "
            f"one of {sorted(_COMPUTE_DTYPES)})."
        )
    notes = []
    if config.get("replay_context"):
        notes.append(
            f"replay_context {config['replay_context']}: keras-dreamer's replay "
            "has no stored latents yet; training continues without them"
        )
    return ReferenceSettings(agent, optimizer, _COMPUTE_DTYPES[dtype], notes)


# ------------------------------------------------------------------ spaces


def infer_spaces(config, params):
    """The observation and action spaces a reference agent was trained on.

    The action space and the vector observation keys come from the
    parameter shapes (`pol/head/<key>/...`, `dec/vec/<key>/...`); the image
    key is `image` (every suite of the reference names it so), its size
    from the config's `env.<suite>.size` and its channels from the
    decoder's output layer.

    Args:
        config: the reference's config (for the image size).
        params: reference parameter name -> array (only shapes are read).

    Returns:
        `(obs_space, act_space)` as `kd.Box`/`kd.Discrete` objects.

    Raises:
        ReferenceCheckpointError: several action keys, or an image size the
            config does not give.

    Examples:
        >>> params = {"pol/head/action/logits/kernel": np.zeros((8, 4)),
        ...           "dec/vec/pos/pred/kernel": np.zeros((8, 3))}
        >>> infer_spaces({}, params)
        ({'pos': Box((3,), -inf, inf, float32)}, Discrete(4))
    """
    from keras_dreamer.spaces import Box
    from keras_dreamer.spaces import Discrete

    heads = {}
    for name in params:
        match = re.match(r"^pol/head/([^/]+)/(logits|mean)/kernel$", name)
        if match:
            heads[match.group(1)] = (match.group(2), params[name].shape[-1])
    if len(heads) != 1:
        raise ReferenceCheckpointError(
            f"the reference agent has action keys {sorted(heads)}; keras-dreamer "
            "agents act with exactly one action space"
        )
    ((kind, width),) = heads.values()
    act_space = Discrete(width) if kind == "logits" else Box((width,), -1.0, 1.0)

    obs_space = {}
    for name in sorted(params):
        match = re.match(r"^dec/vec/([^/]+)/(pred|logits)/kernel$", name)
        if not match:
            continue
        key, kind = match.groups()
        width = params[name].shape[-1]
        if kind == "logits":
            obs_space[key] = Discrete(width)
        else:
            obs_space[key] = Box((width,))
    if "dec/imgout/kernel" in params:
        channels = params["dec/imgout/kernel"].shape[-1]
        suite = str(config.get("task", "")).split("_", 1)[0]
        size = (config.get("env", {}).get(suite) or {}).get("size")
        if not size or len(size) != 2:
            raise ReferenceCheckpointError(
                f"config.yaml: no env.{suite}.size for the image key; pass "
                "obs_space={'image': (H, W, C), ...} to from_reference"
            )
        obs_space["image"] = Box((*size, channels), 0, 255, "uint8")
    return obs_space, act_space


# ---------------------------------------------------------------- the map


@dataclasses.dataclass(frozen=True)
class MapEntry:
    """One reference parameter and where it lives in a `kd.Agent`.

    Args:
        reference: the reference's name, e.g. `dyn/obs0/kernel`.
        ours: the path of our variable, e.g. `rssm/obs0/kernel`.
        rows: `ours = reference[rows]` (a permutation of the first axis),
            or None where the layouts are the same.

    Examples:
        >>> entry = MapEntry("dec/mlp/linear0/kernel", "decoder/mlp0/linear/kernel",
        ...                  rows=(2, 0, 1))
        >>> entry.to_ours(np.arange(3)).tolist()
        [2, 0, 1]
        >>> entry.to_reference(entry.to_ours(np.arange(3))).tolist()
        [0, 1, 2]
    """

    reference: str
    ours: str
    rows: tuple | None = None

    def to_ours(self, value):
        value = np.asarray(value)
        return value[list(self.rows)] if self.rows is not None else value

    def to_reference(self, ours):
        ours = np.asarray(ours)
        if self.rows is None:
            return ours
        value = np.empty_like(ours)
        value[list(self.rows)] = ours
        return value


# Reference scope path -> our variable path, for the parameters whose layout
# is the same (most of them).
_RENAMES = [
    (r"^enc/cnn(\d+)/(kernel|bias)$", r"encoder/conv\1/\2"),
    (r"^enc/cnn(\d+)norm/scale$", r"encoder/conv\1norm/scale"),
    (r"^enc/mlp(\d+)/(kernel|bias)$", r"encoder/mlp\1/linear/\2"),
    (r"^enc/mlp(\d+)norm/scale$", r"encoder/mlp\1/norm/scale"),
    (r"^dyn/(dynin\d+|prior\d+|obs[1-9]\d*)/(kernel|bias)$", r"rssm/\1/linear/\2"),
    (r"^dyn/(dynin\d+|prior\d+|obs[1-9]\d*)norm/scale$", r"rssm/\1/norm/scale"),
    (r"^dyn/(obs0|dynhid\d+|dyngru|priorlogit|obslogit)/(kernel|bias)$", r"rssm/\1/\2"),
    (r"^dyn/(obs0norm|dynhid\d+norm)/scale$", r"rssm/\1/scale"),
    (r"^dec/(sp0|sp2|imgout|conv\d+)/(kernel|bias)$", r"decoder/\1/\2"),
    (r"^dec/(spnorm|conv\d+norm)/scale$", r"decoder/\1/scale"),
    (r"^dec/sp1/(kernel|bias)$", r"decoder/sp1/linear/\1"),
    (r"^dec/sp1norm/scale$", r"decoder/sp1/norm/scale"),
    (r"^dec/mlp/linear(\d+)/(kernel|bias)$", r"decoder/mlp\1/linear/\2"),
    (r"^dec/mlp/norm(\d+)/scale$", r"decoder/mlp\1/norm/scale"),
    (r"^dec/vec/([^/]+)/(?:pred|logits)/(kernel|bias)$", r"decoder/out_\1/\2"),
    (r"^rew/mlp/linear(\d+)/(kernel|bias)$", r"reward/hidden\1/linear/\2"),
    (r"^rew/mlp/norm(\d+)/scale$", r"reward/hidden\1/norm/scale"),
    (r"^rew/head/logits/(kernel|bias)$", r"reward/out/\1"),
    (r"^con/mlp/linear(\d+)/(kernel|bias)$", r"cont/hidden\1/linear/\2"),
    (r"^con/mlp/norm(\d+)/scale$", r"cont/hidden\1/norm/scale"),
    (r"^con/head/logit/(kernel|bias)$", r"cont/out/\1"),
    (r"^pol/mlp/linear(\d+)/(kernel|bias)$", r"actor/net/hidden\1/linear/\2"),
    (r"^pol/mlp/norm(\d+)/scale$", r"actor/net/hidden\1/norm/scale"),
    (r"^pol/head/[^/]+/(?:logits|mean)/(kernel|bias)$", r"actor/net/out/\1"),
    (r"^pol/head/[^/]+/stddev/(kernel|bias)$", r"actor/stddev/\1"),
    (r"^val/mlp/linear(\d+)/(kernel|bias)$", r"critic/hidden\1/linear/\2"),
    (r"^val/mlp/norm(\d+)/scale$", r"critic/hidden\1/norm/scale"),
    (r"^val/head/logits/(kernel|bias)$", r"critic/out/\1"),
    (r"^slowval/mlp/linear(\d+)/(kernel|bias)$", r"critic/slow/hidden\1/linear/\2"),
    (r"^slowval/mlp/norm(\d+)/scale$", r"critic/slow/hidden\1/norm/scale"),
    (r"^slowval/head/logits/(kernel|bias)$", r"critic/slow/out/\1"),
    (r"^retnorm/(lo|hi)/value$", r"retnorm/\1"),
]
# Counters: the optimizer's update count (all four are equal in a checkpoint
# the reference wrote) and the slow critic's.
OPTIMIZER_COUNTS = (
    "opt/step/value",
    "opt/state/1/0",
    "opt/state/2/0",
    "opt/state/3/count",
)
SLOW_COUNT = "slowval_count/value"
# The LaProp moments of a parameter P: its second moment and its momentum.
VELOCITY_PREFIX = "opt/state/1/1/"
MOMENTUM_PREFIX = "opt/state/2/1/"


def token_permutation(agent):
    """`ours = reference[..., perm]` for the encoder's output (tokens).

    The reference concatenates the vector MLP's output and then the image
    CNN's; ours the image CNN's and then the vector MLP's.

    Args:
        agent: a `kd.Agent`.

    Returns:
        An int numpy array of the token width.

    Examples:
        >>> import keras_dreamer as kd
        >>> agent = kd.Agent({"image": (16, 16, 3), "pos": kd.Box((2,))},
        ...                  kd.Discrete(3), preset="debug", mults=(4, 4))
        >>> perm = token_permutation(agent)
        >>> perm[:2].tolist(), perm[-8:].tolist()  # 8 vector units come last
        ([8, 9], [0, 1, 2, 3, 4, 5, 6, 7])
    """
    from keras_dreamer.layers.encoder import vector_width

    encoder = agent.world_model.encoder
    vector = 0
    if encoder.vector_keys:
        widths = (vector_width(encoder.spaces[k]) for k in encoder.vector_keys)
        vector = encoder.units if encoder.layers else sum(widths)
    image = encoder.output_width - vector
    return np.concatenate([vector + np.arange(image), np.arange(vector)])


def name_map(agent, names):
    """The map of reference parameter `names` onto `agent`'s variables.

    Args:
        agent: a built `kd.Agent`.
        names: the reference's parameter names (model, slow critic,
            normaliser; the optimizer's entries are handled by
            `load_into`/`export` through the same map).

    Returns:
        A list of `MapEntry`, one per name.

    Raises:
        ReferenceCheckpointError: a name that maps to nothing.

    Examples:
        >>> import keras_dreamer as kd
        >>> agent = kd.Agent({"image": (16, 16, 3)}, kd.Discrete(3),
        ...                  preset="debug", mults=(4, 4))
        >>> entries = name_map(agent, ["dyn/dynin0/kernel", "val/head/logits/bias"])
        >>> [entry.ours for entry in entries]
        ['rssm/dynin0/linear/kernel', 'critic/out/bias']
    """
    wm = agent.world_model
    deter = wm.config["deter"]
    flat_stoch = wm.config["stoch"] * wm.config["classes"]
    tokens = token_permutation(agent)
    obs0_rows = tuple(np.concatenate([np.arange(deter), deter + tokens]).tolist())
    dec_rows = tuple(
        np.concatenate([flat_stoch + np.arange(deter), np.arange(flat_stoch)]).tolist()
    )
    entries, unknown = [], []
    for name in names:
        ours = None
        for pattern, target in _RENAMES:
            if re.match(pattern, name):
                ours = re.sub(pattern, target, name)
                break
        if ours is None:
            unknown.append(name)
            continue
        rows = None
        if name == "dyn/obs0/kernel":
            rows = tuple(tokens.tolist()) if wm.rssm.absolute else obs0_rows
        elif name == "dec/mlp/linear0/kernel":
            rows = dec_rows
        entries.append(MapEntry(name, ours, rows))
    if unknown:
        raise ReferenceCheckpointError(
            f"reference parameter(s) with no counterpart in keras-dreamer: "
            f"{', '.join(sorted(unknown))}"
        )
    return entries


def model_parameter_names(params):
    """The names in `params` that `name_map` maps (not the optimizer's).

    Args:
        params: reference parameter names (or a dict keyed by them).

    Returns:
        A list of names.

    Examples:
        >>> model_parameter_names(["dyn/dyngru/kernel", "opt/step/value"])
        ['dyn/dyngru/kernel']
    """
    return [
        name for name in params if not name.startswith("opt/") and name != SLOW_COUNT
    ]


def load_into(agent, params, source="agent.pkl"):
    """Copies reference `params` into a built, compiled `agent`.

    Every model parameter, the slow critic, the return normaliser and, when
    the agent's optimizer is a `kd.optimizers.LaProp`, its moments and update
    count. Each reference entry is used exactly once and each of our
    variables is filled exactly once; anything else is an error naming it.

    Args:
        agent: a `kd.Agent` built with the matching sizes (`from_reference`
            builds one).
        params: reference name -> array.
        source: the file name used in error messages.

    Raises:
        ReferenceCheckpointError: an unmatched name or a shape mismatch.

    Examples:
        >>> import keras_dreamer as kd
        >>> agent = kd.Agent({"image": (16, 16, 3)}, kd.Discrete(3),
        ...                  preset="debug", mults=(4, 4))
        >>> load_into(agent, {"dyn/dyngru/kernel": np.zeros((2, 2))})
        Traceback (most recent call last):
        ...
        keras_dreamer.reference.ReferenceCheckpointError: agent.pkl:
        dyn/dyngru/kernel has shape (2, 2), but rssm/dyngru/kernel needs (4, 2, 6)
    """
    from keras_dreamer.optimizers import LaProp

    variables = {v.path: v for v in agent.variables}
    entries = name_map(agent, model_parameter_names(params))
    values = {}
    for entry in entries:
        target = variables.get(entry.ours)
        if target is None:
            raise ReferenceCheckpointError(
                f"{source}: {entry.reference} maps to {entry.ours}, which this "
                "agent does not have (a size or space differs)"
            )
        if entry.ours in values:
            raise ReferenceCheckpointError(
                f"{source}: two reference parameters map to {entry.ours}"
            )
        value = entry.to_ours(params[entry.reference])
        if tuple(value.shape) != tuple(target.shape):
            raise ReferenceCheckpointError(
                f"{source}: {entry.reference} has shape {tuple(value.shape)}, "
                f"but {entry.ours} needs {tuple(target.shape)}"
            )
        values[entry.ours] = value
    expected = {
        v.path
        for v in agent.variables
        if v.trainable or v.path.startswith(("critic/slow/", "retnorm/"))
    }
    missing = sorted(expected - set(values))
    if missing:
        raise ReferenceCheckpointError(
            f"{source}: no reference parameter for {', '.join(missing)}"
        )
    for path, value in values.items():
        variables[path].assign(value.astype(variables[path].dtype))
    # The slow critic: the reference moves it after each update; ours moves
    # at the start of the next train step, so a freshly imported slow critic
    # must not move before the first update (exact for slowvalue.every 1).
    agent.critic.slow_updates.assign(0)

    optimizer = getattr(agent, "optimizer", None)
    if not isinstance(optimizer, LaProp):
        return
    optimizer.build(agent.trainable_variables)
    present = {k: int(np.asarray(params[k])) for k in OPTIMIZER_COUNTS if k in params}
    if len(set(present.values())) > 1:
        raise ReferenceCheckpointError(
            f"{source}: the optimizer's counters differ: {present}"
        )
    if present:
        optimizer.iterations.assign(next(iter(present.values())))
    by_model = {entry.reference: entry for entry in entries}
    for name, value in params.items():
        for prefix, slot in ((MOMENTUM_PREFIX, 0), (VELOCITY_PREFIX, 1)):
            if not name.startswith(prefix):
                continue
            entry = by_model.get(name[len(prefix) :])
            if entry is None:
                raise ReferenceCheckpointError(
                    f"{source}: optimizer state {name} of an unknown parameter"
                )
            target = optimizer.moments(variables[entry.ours])[slot]
            value = entry.to_ours(value)
            if tuple(value.shape) != tuple(target.shape):
                raise ReferenceCheckpointError(
                    f"{source}: {name} has shape {tuple(value.shape)}, but "
                    f"{target.path} needs {tuple(target.shape)}"
                )
            target.assign(value.astype("float32"))


def export(agent, names, optimizer=True):
    """The agent's weights under the reference's names: the map's inverse.

    Args:
        agent: a `kd.Agent`.
        names: the reference's parameter names to produce (those of a
            reference checkpoint of the same configuration, e.g. its
            `agent.pkl` keys; optimizer entries among them are skipped).
        optimizer: also export the LaProp moments and update count.

    Returns:
        dict reference name -> numpy array, laid out as `agent.pkl` holds
        them: `load_into(agent, export(agent, names))` changes nothing.

    Examples:
        >>> import keras_dreamer as kd
        >>> agent = kd.Agent({"image": (16, 16, 3)}, kd.Discrete(3),
        ...                  preset="debug", mults=(4, 4))
        >>> export(agent, ["dyn/dyngru/kernel"])["dyn/dyngru/kernel"].shape
        (4, 2, 6)
    """
    from keras_dreamer.optimizers import LaProp

    variables = {v.path: v for v in agent.variables}
    entries = name_map(agent, model_parameter_names(dict.fromkeys(names)))
    params = {
        entry.reference: entry.to_reference(np.asarray(variables[entry.ours].numpy()))
        for entry in entries
    }
    params[SLOW_COUNT] = np.asarray(int(agent.critic.slow_updates.numpy()), np.int32)
    opt = getattr(agent, "optimizer", None)
    if optimizer and isinstance(opt, LaProp) and opt.built:
        count = np.asarray(int(opt.iterations.numpy()), np.int32)
        for name in OPTIMIZER_COUNTS:
            params[name] = count
        for entry in entries:
            if entry.reference.startswith(("slowval/", "retnorm/")):
                continue
            momentum, velocity = opt.moments(variables[entry.ours])
            params[VELOCITY_PREFIX + entry.reference] = entry.to_reference(
                velocity.numpy()
            )
            params[MOMENTUM_PREFIX + entry.reference] = entry.to_reference(
                momentum.numpy()
            )
    return params


# ------------------------------------------------------------ noise


def onehot_noise(onehot):
    """Uniform noise from which `kd.ops.sample_onehot` draws exactly `onehot`.

    The sampler takes the argmax of `logits + gumbel(noise)`; this noise
    gives the chosen class a Gumbel value about 20 above every other class,
    so the sample is `onehot` whenever the logits' largest gap is smaller
    (always for DreamerV3's 1%-unimixed latents: at most `log(100 K)`). Used
    to replay another implementation's samples, e.g. the reference's.

    Args:
        onehot: array `[..., K]` of one-hot samples.

    Returns:
        float32 noise of the same shape.

    Examples:
        >>> onehot_noise([[0.0, 1.0, 0.0]]).round(3).tolist()
        [[0.0, 1.0, 0.0]]
    """
    onehot = np.asarray(onehot)
    return np.where(onehot > 0.5, np.float32(1.0 - 1e-7), np.float32(0.0)).astype(
        "float32"
    )


def normal_noise(sample, mean, std):
    """Standard-normal noise from which a `Box` actor draws exactly `sample`.

    Args:
        sample: actions `[..., A]` drawn from `Normal(mean, std)`.
        mean: the distribution's mean.
        std: its standard deviation.

    Returns:
        float32 `(sample - mean) / std`.

    Examples:
        >>> normal_noise([0.5], [0.25], [0.5]).tolist()
        [0.5]
    """
    sample, mean, std = (np.asarray(x, "float64") for x in (sample, mean, std))
    return ((sample - mean) / std).astype("float32")


# ------------------------------------------------------------------ import


def from_reference(directory, obs_space=None, act_space=None, dtype=None):
    """Builds the `kd.Agent` of a reference checkpoint and loads its weights.

    Args:
        directory: the reference run's logdir (its newest checkpoint is
            read) or one `ckpt/<name>` folder of it.
        obs_space: optional observation space dict; by default inferred
            (`infer_spaces`). Given, it is checked against the weights.
        act_space: optional action space; inferred by default.
        dtype: optional Keras dtype policy; by default that of the run's
            `jax.compute_dtype` (bfloat16 -> "mixed_bfloat16").

    Returns:
        A compiled `kd.Agent` with every parameter, the slow critic, the
        return normaliser and the optimizer state of the checkpoint.

    Raises:
        ReferenceCheckpointError: naming the file and key that cannot be
            imported.

    Examples:
        A reference run's logdir (here one that does not exist):

        >>> from_reference("/no/such/run")
        Traceback (most recent call last):
        ...
        keras_dreamer.reference.ReferenceCheckpointError: ...no such directory.
    """
    from keras_dreamer.agent import Agent
    from keras_dreamer.optimizers import LaProp

    checkpoint = read_checkpoint(os.path.expanduser(os.fspath(directory)))
    settings = translate_config(checkpoint.config)
    inferred_obs, inferred_act = infer_spaces(checkpoint.config, checkpoint.params)
    agent = Agent(
        obs_space if obs_space is not None else inferred_obs,
        act_space if act_space is not None else inferred_act,
        preset=None,
        dtype=dtype or settings.dtype,
        **settings.agent,
    )
    agent.compile(optimizer=LaProp(**settings.optimizer))
    load_into(
        agent, checkpoint.params, source=os.path.join(checkpoint.path, "agent.pkl")
    )
    for note in settings.notes:
        logging.getLogger("keras_dreamer").warning("%s: %s", checkpoint.path, note)
    return agent
