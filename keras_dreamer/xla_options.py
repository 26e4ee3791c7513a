"""The compiler options of keras-dreamer's compiled functions (an earlier home).

They now come from the running backend (`keras_dreamer.backend`): on JAX,
`keras_dreamer.backend.jax_compiler` (its docstrings give the rule);
on TensorFlow there are none. The names below keep working:
`jax_compiler_options()` (a dict for `jax.jit`, or None), `jit(fn)` (JAX
only), `keras_jit_options()` (a context in which Keras compiles its train,
test and predict steps with them) and `OPTIONS_ENV`, the environment
variable `KERAS_DREAMER_XLA_OPTIONS` (`auto` or `off`).
"""

import importlib

from keras_dreamer import backend
from keras_dreamer.backend.common import OPTIONS_ENV  # noqa: F401
from keras_dreamer.backend.common import OPTIONS_MODES  # noqa: F401

jax_compiler_options = backend.compiler_options
keras_jit_options = backend.keras_compiler_options


def __getattr__(name):
    # JAX-only names, imported only when asked for.
    if name in ("jit", "YNN_FUSION_OPTION", "CPU_YNN_FUSIONS"):
        module = importlib.import_module("keras_dreamer.backend.jax_compiler")
        return getattr(module, name)
    raise AttributeError(
        f"module 'keras_dreamer.xla_options' has no attribute {name!r}"
    )
