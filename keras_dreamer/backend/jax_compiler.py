"""XLA compiler options of the JAX programs keras-dreamer compiles.

XLA's CPU backend (jax 0.10) hands convolutions to YNNPACK library fusions by
default; for DreamerV3's encoder and decoder convolutions XLA's own CPU
convolutions are faster (measurements: `docs/backends.md`,
`benchmarks/RESULTS.md`). `jax_compiler_options` says which options apply on
this machine; `jit` compiles keras-dreamer's own functions with them and
`keras_jit_options` makes Keras's train, test and predict functions take
them. Matrix products and reductions stay with YNNPACK.
"""

import contextlib
import functools
import os

import jax

from keras_dreamer.backend.common import OPTIONS_ENV
from keras_dreamer.backend.common import compiler_options_mode
from keras_dreamer.backend.common import log_once

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# XLA's default library fusions on a CPU without INDIVIDUAL_CONVOLUTION.
CPU_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def jax_compiler_options():
    """The XLA compiler options of keras-dreamer's JAX programs here.

    On a JAX CPU: `{"xla_cpu_experimental_ynn_fusion_type": ...}`, XLA's
    default library fusions less the convolutions, so that these compile
    to XLA's own CPU convolutions. None (XLA's defaults) on another
    device, when `KERAS_DREAMER_XLA_OPTIONS=off`, when `XLA_FLAGS` sets
    that option itself (yours wins), or when this jaxlib does not know the
    option. The choice is logged once per process (logger `keras_dreamer`,
    level INFO).

    Returns:
        A dict of compiler options for `jax.jit(..., compiler_options=...)`,
        or None.

    Raises:
        ValueError: `KERAS_DREAMER_XLA_OPTIONS` holds a value other than
            "auto" or "off".

    Examples:
        >>> options = jax_compiler_options()
        >>> options is None or isinstance(options, dict)
        True
    """
    if compiler_options_mode() == "off":
        return None
    if YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return None
    if jax.default_backend() != "cpu":
        return None
    options = {YNN_FUSION_OPTION: CPU_YNN_FUSIONS}
    if not _compiles_with(tuple(options.items())):
        log_once(
            "xla_options_unsupported",
            "This jaxlib's XLA has no %s option: keras-dreamer's JAX programs "
            "compile with XLA's default options.",
            YNN_FUSION_OPTION,
        )
        return None
    log_once(
        "xla_options",
        "JAX on a CPU: keras-dreamer compiles its convolutions with XLA's own "
        "CPU kernels instead of YNNPACK fusions (%s=%s; %s=off keeps XLA's "
        "defaults).",
        YNN_FUSION_OPTION,
        CPU_YNN_FUSIONS,
        OPTIONS_ENV,
    )
    return options


def jit(fn, **kwargs):
    """`jax.jit(fn, **kwargs)` with `jax_compiler_options()`.

    Args:
        fn: the function to compile.
        **kwargs: other `jax.jit` arguments.

    Returns:
        The jitted function.

    Examples:
        >>> import numpy as np
        >>> float(jit(lambda x: 2 * x)(np.float32(3)))
        6.0
    """
    options = jax_compiler_options()
    if options:
        kwargs["compiler_options"] = options
    return jax.jit(fn, **kwargs)


@contextlib.contextmanager
def keras_jit_options():
    """Makes Keras's JAX trainer compile with `jax_compiler_options()`.

    Keras's JAX trainer jits its train, test and predict steps with the
    `jit` of its module `keras.src.backend.jax.trainer` and takes no compiler
    options, so, while a model builds one of them inside this context, that
    name is `jax.jit` with the options. This is the one place that touches
    that private name; `tests/test_xla_options.py` fails if it changes.
    Where the name is not `jax.jit` (Keras with Flax NNX) or there are no
    options, nothing changes.

    Examples:
        >>> with keras_jit_options():
        ...     pass
    """
    options = jax_compiler_options()
    if not options:
        yield
        return
    from keras.src.backend.jax import trainer

    if getattr(trainer, "jit", None) is not jax.jit:
        yield
        return
    trainer.jit = functools.partial(jax.jit, compiler_options=options)
    try:
        yield
    finally:
        trainer.jit = jax.jit


@functools.cache
def _compiles_with(options):
    import jax.numpy as jnp

    try:
        jitted = jax.jit(lambda x: x + 1, compiler_options=dict(options))
        jitted.lower(jnp.zeros((), "float32")).compile()
    except Exception:  # an unknown option or enum value, or an older jax.jit
        return False
    return True
