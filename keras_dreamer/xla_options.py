"""XLA compiler options for the JAX programs keras-dreamer compiles.

XLA's CPU backend (jax 0.10) hands convolutions to YNNPACK library fusions by
default. For the convolutions of DreamerV3's encoder and decoder, XLA's other
CPU convolutions (Eigen's) are faster: a size12m world-model update on a
2-core Intel Xeon with AVX-512 took 8.4 s instead of 10.6 s (in one process,
alternating; `benchmarks/RESULTS.md`). `jax_compiler_options` says which
options keras-dreamer compiles with on this machine; `fitting` passes them to
Keras's train, test and predict functions (`keras_jit_options`) and to its
own jitted functions. Matrix products and reductions stay with YNNPACK.
"""

import contextlib
import functools
import os

from keras_dreamer.ops import backend
from keras_dreamer.ops import env_mode
from keras_dreamer.ops import log_once

OPTIONS_ENV = "KERAS_DREAMER_XLA_OPTIONS"
OPTIONS_MODES = ("auto", "off")
YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# XLA's default library fusions on a CPU without INDIVIDUAL_CONVOLUTION.
CPU_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def jax_compiler_options():
    """The XLA compiler options of keras-dreamer's JAX programs here.

    On a JAX CPU: `{"xla_cpu_experimental_ynn_fusion_type": ...}`, XLA's
    default library fusions less the convolutions, so that these compile
    to XLA's own CPU convolutions. None (XLA's defaults) on another backend
    or device, when `KERAS_DREAMER_XLA_OPTIONS=off`, when `XLA_FLAGS` sets
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
    mode = env_mode(OPTIONS_ENV, OPTIONS_MODES)
    if backend() != "jax" or mode == "off":
        return None
    if YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return None
    import jax

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
    import jax

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
    import jax
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
    import jax
    import jax.numpy as jnp

    try:
        jitted = jax.jit(lambda x: x + 1, compiler_options=dict(options))
        jitted.lower(jnp.zeros((), "float32")).compile()
    except Exception:  # an unknown option or enum value, or an older jax.jit
        return False
    return True
