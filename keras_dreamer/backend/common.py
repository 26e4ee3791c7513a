"""What every backend module shares: mode switches, once-per-process logs,
and the process and device functions of a backend that runs one process on
one device (TensorFlow, PyTorch).

The environment variables that switch a run-time choice
(`KERAS_DREAMER_CONV_GRAD`, `KERAS_DREAMER_XLA_OPTIONS`) are read here, on
every backend, so a bad value is the same clear error wherever it is set.
"""

import logging
import os

CONV_GRAD_ENV = "KERAS_DREAMER_CONV_GRAD"
CONV_GRAD_MODES = ("auto", "xla", "matmul")
OPTIONS_ENV = "KERAS_DREAMER_XLA_OPTIONS"
OPTIONS_MODES = ("auto", "off")
STEP_COMPILE_ENV = "KERAS_DREAMER_STEP_COMPILE"
STEP_COMPILE_MODES = ("auto", "off")
_logger = logging.getLogger("keras_dreamer")
_logged = set()


def env_mode(variable, modes):
    """The mode an environment variable chooses: its value, lower-cased, or
    `modes[0]` when it is unset or empty.

    Args:
        variable: the environment variable's name.
        modes: the valid values, the default first.

    Returns:
        One of `modes`.

    Raises:
        ValueError: the variable holds another value (the message names it
            and the valid values).

    Examples:
        >>> env_mode("KERAS_DREAMER_UNSET_EXAMPLE", ("auto", "off"))
        'auto'
    """
    mode = os.environ.get(variable, "").strip().lower() or modes[0]
    if mode not in modes:
        raise ValueError(
            f"{variable}={os.environ[variable]!r} is not one of {', '.join(modes)}."
        )
    return mode


def conv_grad_mode():
    """How convolutions compute kernel gradients: the `KERAS_DREAMER_CONV_GRAD`
    environment variable, `"auto"` when unset.

    `"xla"` always uses the backend's own convolution gradient, `"matmul"`
    computes the kernel gradient of every convolution as matrix products
    where the backend has such a kernel (JAX), `"auto"` lets the backend's
    rule decide per layer shape (`matmul_kernel_grad` of the backend).

    Returns:
        One of `CONV_GRAD_MODES`.

    Raises:
        ValueError: the variable holds another value.

    Examples:
        >>> conv_grad_mode() in CONV_GRAD_MODES
        True
    """
    return env_mode(CONV_GRAD_ENV, CONV_GRAD_MODES)


def compiler_options_mode():
    """Whether keras-dreamer may choose compiler options: the
    `KERAS_DREAMER_XLA_OPTIONS` environment variable, `"auto"` when unset.

    Returns:
        One of `OPTIONS_MODES` (`"off"` keeps the compiler's defaults).

    Raises:
        ValueError: the variable holds another value.

    Examples:
        >>> compiler_options_mode() in OPTIONS_MODES
        True
    """
    return env_mode(OPTIONS_ENV, OPTIONS_MODES)


def step_compile_mode():
    """Whether a backend that runs eagerly may compile the gradient-free loop
    bodies (`gradient_free_step`): the `KERAS_DREAMER_STEP_COMPILE`
    environment variable, `"auto"` when unset.

    Returns:
        One of `STEP_COMPILE_MODES` (`"off"` keeps them eager).

    Raises:
        ValueError: the variable holds another value.

    Examples:
        >>> step_compile_mode() in STEP_COMPILE_MODES
        True
    """
    return env_mode(STEP_COMPILE_ENV, STEP_COMPILE_MODES)


def gradient_free_step(fn):
    """`fn` itself: on a backend that compiles the whole train step, a loop
    body inside it needs nothing more.

    Args:
        fn: a loop body `fn(carry, x) -> (carry, y)` whose outputs need no
            gradient.

    Examples:
        >>> step = gradient_free_step(lambda carry, x: (carry + x, x))
        >>> step(1.0, 2.0)
        (3.0, 2.0)
    """
    return fn


def log_once(key, message, *args):
    """Logs a choice made at run time once per process.

    `message % args` goes to the `keras_dreamer` logger at INFO level the
    first time `key` is seen in this process; later calls with that key log
    nothing.

    Args:
        key: what the message is about (one message per key).
        message: a `logging` format string.
        *args: its arguments.

    Examples:
        >>> log_once("example", "said once: %s", "this")
        >>> log_once("example", "never said")
    """
    if key not in _logged:
        _logged.add(key)
        _logger.info(message, *args)


def log_pool_rule(backend, on_cpu, rule):
    """Logs, once, which convolution + pooling layers run on 2x2 blocks.

    Args:
        backend: the backend's name.
        on_cpu: whether it computes on the CPU.
        rule: the layers that do, in words.

    Examples:
        >>> log_pool_rule("jax", True, "inputs of <= 4 channels")
    """
    log_once(
        "pool",
        "%s on a %s: convolution + 2x2 max pooling of %s runs on the "
        "2x2 space-to-depth blocks (keras_dreamer.layers.conv.pool_conv_on_blocks).",
        backend,
        "CPU" if on_cpu else "accelerator",
        rule,
    )


def value_device_count(value):
    """Always 1: values live on one device.

    Args:
        value: a tensor.

    Examples:
        >>> value_device_count([0.0, 0.0])
        1
    """
    return 1


def local_values(values):
    """The values as they are (they live on one device).

    Args:
        values: a list of tensors.

    Examples:
        >>> import numpy as np
        >>> local_values([np.zeros(2)])[0].tolist()
        [0.0, 0.0]
    """
    return list(values)


def assign_local(variable, value):
    """`variable.assign(value)`.

    Args:
        variable: a Keras variable.
        value: its new value.

    Examples:
        >>> import keras
        >>> variable = keras.Variable(0.0)
        >>> assign_local(variable, 1.0)
        >>> float(variable.value)
        1.0
    """
    variable.assign(value)


def broadcast_one_to_all(tree):
    """The tree itself: there is one process.

    Args:
        tree: a nested structure of numpy arrays.

    Examples:
        >>> broadcast_one_to_all({"step": 8})["step"]
        8
    """
    return tree


def process_allgather(value):
    """`[value]`: there is one process (stacked, as JAX's is).

    Args:
        value: a numpy array.

    Examples:
        >>> process_allgather(3)
        [3]
    """
    return [value]
