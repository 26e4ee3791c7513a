"""keras-dreamer: DreamerV3's RSSM world model as Keras 3 layers.

Set `KERAS_BACKEND` ("jax", "tensorflow" or "torch") before importing Keras or
this package. Submodules load on first use, so `import keras_dreamer` is cheap and
`keras_dreamer.logger` can be used without importing Keras at all.

Examples:
    >>> import keras_dreamer as kd
    >>> kd.Discrete(17)
    Discrete(17)
"""

import importlib
import os

# PyTorch's OpenMP threads spin between operations unless told to sleep; with
# Keras's many small ops that spinning takes the CPU from the thread that
# dispatches them (see docs/backends.md). OpenMP reads this once, when PyTorch
# loads, so it only helps if this package is imported first; a value already
# set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete

__version__ = "0.1.0"

_LAZY_ATTRIBUTES = {
    "WorldModel": "keras_dreamer.world_model",
    "Agent": "keras_dreamer.agent",
    "AgentPolicy": "keras_dreamer.policy",
    "DreamerReportCallback": "keras_dreamer.callbacks",
    "PRESETS": "keras_dreamer.presets",
    "load_policy": "keras_dreamer.train.evaluation",
}
_SUBMODULES = (
    "agent",
    "callbacks",
    "data",
    "distribute",
    "envs",
    "fitting",
    "layers",
    "logger",
    "openloop",
    "ops",
    "optimizers",
    "policy",
    "presets",
    "reference",
    "returns",
    "spaces",
    "train",
    "world_model",
    "xla_options",
)

__all__ = ["Box", "Discrete", *_LAZY_ATTRIBUTES, *_SUBMODULES]


def __getattr__(name):
    if name in _LAZY_ATTRIBUTES:
        module = importlib.import_module(_LAZY_ATTRIBUTES[name])
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_dreamer.{name}")
    raise AttributeError(f"module 'keras_dreamer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
