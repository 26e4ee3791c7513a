"""The TensorFlow backend: keras-dreamer's functions as TensorFlow runs them.

Functions are `tf.function`s; the variables are always current, so acting
needs no snapshot; one process and one device (Keras's TensorFlow trainer
does not apply `keras.distribution`, see `keras_dreamer.distribute`). The
speed rules below were measured on CPUs; their numbers are in
`docs/backends.md` and `benchmarks/RESULTS.md`.
"""

import contextlib

import keras
import tensorflow as tf
from keras import ops

from keras_dreamer.backend import common
from keras_dreamer.backend.common import assign_local  # noqa: F401 -- one process
from keras_dreamer.backend.common import broadcast_one_to_all  # noqa: F401 -- one process
from keras_dreamer.backend.common import gradient_free_step  # noqa: F401 -- compiled whole
from keras_dreamer.backend.common import local_values  # noqa: F401 -- one process
from keras_dreamer.backend.common import process_allgather  # noqa: F401 -- one process
from keras_dreamer.backend.common import value_device_count  # noqa: F401 -- one process

NAME = "tensorflow"
SUPPORTS_DISTRIBUTION = False
# Why `kd.distribute` refuses several devices or processes here.
DISTRIBUTION_LIMITS = (
    "On TensorFlow, Keras 3.15 applies "
    "keras.distribution only in its JAX trainer, and its TensorFlow trainer "
    "under tf.distribute.MirroredStrategy fails on this batch format: before "
    "the first step it averages the replicas' first batch (MEAN reduce), "
    "which TensorFlow cannot do for the bool is_first/is_last/is_terminal "
    "flags (InvalidArgumentError: AddN of bool)."
)
FIT_DETACHES_VARIABLES = False

__all__ = [
    "NAME",
    "SUPPORTS_DISTRIBUTION",
    "FIT_DETACHES_VARIABLES",
    "DISTRIBUTION_LIMITS",
    "acting_snapshot",
    "assign_local",
    "block_matmul",
    "broadcast_one_to_all",
    "compile_function",
    "compile_with_values",
    "compiler_options",
    "conv2d_same",
    "device_memory",
    "gradient_free_step",
    "wait_for_devices",
    "distributed_initialized",
    "distribution_set",
    "keras_compiler_options",
    "local_device_count",
    "local_device_names",
    "local_values",
    "matmul_kernel_grad",
    "mesh_device_names",
    "merge_step_logs",
    "on_cpu",
    "pool_conv_on_blocks",
    "process_allgather",
    "process_count",
    "process_index",
    "scan",
    "value_device_count",
]


# ----------------------------------------------------------------- devices


def on_cpu():
    """Whether TensorFlow computes on the CPU (no GPU visible).

    Examples:
        >>> isinstance(on_cpu(), bool)
        True
    """
    return not tf.config.list_logical_devices("GPU")


def process_count():
    """Always 1: one process on TensorFlow.

    Examples:
        >>> process_count()
        1
    """
    return 1


def process_index():
    """Always 0: one process on TensorFlow.

    Examples:
        >>> process_index()
        0
    """
    return 0


def local_device_count():
    """Always 1: one device on TensorFlow.

    Examples:
        >>> local_device_count()
        1
    """
    return 1


def local_device_names():
    """The one device training uses.

    Examples:
        >>> local_device_names()
        ['default']
    """
    return ["default"]


def mesh_device_names(per_process):
    """Not available: TensorFlow trains on one device.

    Args:
        per_process: devices per process.

    Raises:
        NotImplementedError: always.

    Examples:
        >>> try:
        ...     mesh_device_names(1)
        ... except NotImplementedError:
        ...     print("one device")
        one device
    """
    raise NotImplementedError("TensorFlow trains on one device.")


def distributed_initialized():
    """Always False: no multi-process runs on TensorFlow.

    Examples:
        >>> distributed_initialized()
        False
    """
    return False


def distribution_set(model):
    """Whether a distribution was asked for (which TensorFlow would ignore):
    a `keras.distribution`, or a `tf.distribute` strategy the model was
    built under.

    Args:
        model: the model about to be trained.

    Examples:
        >>> distribution_set(keras.Sequential())
        False
    """
    if keras.distribution.distribution() is not None:
        return True
    strategy = getattr(model, "distribute_strategy", None)
    return strategy is not None and strategy.num_replicas_in_sync > 1


def device_memory():
    """Memory use of the GPUs TensorFlow sees.

    Returns:
        A dict like `{"device0_mem_gb": 1.5, "device0_mem_peak_gb": 2.0}`;
        empty on a CPU.

    Examples:
        >>> isinstance(device_memory(), dict)
        True
    """
    gib = float(1 << 30)
    metrics = {}
    for index, device in enumerate(tf.config.list_logical_devices("GPU")):
        info = tf.config.experimental.get_memory_info(device.name)
        metrics[f"device{index}_mem_gb"] = info["current"] / gib
        metrics[f"device{index}_mem_peak_gb"] = info["peak"] / gib
    return metrics


def wait_for_devices():
    """Waits until every op dispatched asynchronously has ended.

    Examples:
        >>> wait_for_devices()
    """
    from tensorflow.python.eager import context

    context.async_wait()


# --------------------------------------------------------------- compiling


def compiler_options():
    """None: TensorFlow compiles with its defaults here (the mode variable
    `KERAS_DREAMER_XLA_OPTIONS` is still checked).

    Examples:
        >>> compiler_options() is None
        True
    """
    common.compiler_options_mode()
    return None


@contextlib.contextmanager
def keras_compiler_options():
    """Nothing to set: Keras's TensorFlow trainer compiles as it does.

    Examples:
        >>> with keras_compiler_options():
        ...     pass
    """
    compiler_options()
    yield


def scan(fn, init, xs, unroll=1):
    """`carry, ys = scan(fn, init, xs)` as a `tf.while_loop` over
    TensorArrays, whose gradient compiles under XLA (`keras.ops.scan`'s
    does not); `ys` need not mirror the carry.

    The first step runs outside the loop to learn the structure and dtypes
    of `y`.

    Args:
        fn: the step function `fn(carry, x) -> (carry, y)`.
        init: the initial carry.
        xs: the per-step inputs, each `[T, ...]`, T >= 1.
        unroll: ignored (XLA decides).

    Examples:
        >>> import numpy as np
        >>> def step(total, x):
        ...     return total + x, total + x
        >>> total, ys = scan(step, np.float32(0), np.ones(3, "float32"))
        >>> float(total), np.asarray(ys).tolist()
        (3.0, [1.0, 2.0, 3.0])
    """
    first = tf.nest.flatten(xs)[0]
    # A static length where known; else dynamic (XLA still sees it as a
    # compile-time constant, since it compiles for concrete shapes).
    length = first.shape[0] if first.shape[0] is not None else tf.shape(first)[0]
    carry, y0 = fn(init, tf.nest.map_structure(lambda x: x[0], xs))
    arrays = tf.nest.map_structure(
        lambda y: tf.TensorArray(y.dtype, size=length, element_shape=y.shape).write(
            0, y
        ),
        y0,
    )
    if isinstance(length, int) and length == 1:
        return carry, tf.nest.map_structure(lambda a: a.stack(), arrays)

    def body(index, carry, arrays):
        x = tf.nest.map_structure(lambda t: tf.gather(t, index), xs)
        carry, y = fn(carry, x)
        arrays = tf.nest.map_structure(lambda a, v: a.write(index, v), arrays, y)
        return index + 1, carry, arrays

    _, carry, arrays = tf.while_loop(
        lambda index, *_: index < length,
        body,
        (tf.constant(1), carry, arrays),
        maximum_iterations=length - 1,
    )
    return carry, tf.nest.map_structure(lambda a: a.stack(), arrays)


def compile_function(layer, fn):
    """`fn` as a `tf.function` (traced once per input shape).

    Args:
        layer: the layer or model whose variables `fn` uses.
        fn: a function of tensors returning a nested structure of tensors.

    Examples:
        >>> import numpy as np
        >>> layer = keras.layers.Dense(2, kernel_initializer="ones")
        >>> layer.build((None, 3))
        >>> double = compile_function(layer, lambda x: 2.0 * layer(x))
        >>> np.asarray(double(np.ones((1, 3), "float32"))).tolist()
        [[6.0, 6.0]]
    """
    return tf.function(fn, reduce_retracing=True)


def compile_with_values(variables, fn):
    """`call(values, *args)`: `fn` as a `tf.function` compiled with XLA; the
    variables are always current, so `values` is ignored.

    XLA because a small function called once per env step (acting) spends
    most of its time dispatching ops otherwise.

    Args:
        variables: the variables `fn` reads (it must not assign them).
        fn: a function of tensors returning a nested structure of tensors.

    Examples:
        >>> import numpy as np
        >>> layer = keras.layers.Dense(1, kernel_initializer="ones")
        >>> layer.build((None, 2))
        >>> run = compile_with_values(layer.weights, lambda x: layer(x))
        >>> np.asarray(run(None, np.ones((1, 2), "float32"))).tolist()
        [[2.0]]
    """
    compiled = tf.function(fn, reduce_retracing=True, jit_compile=True)

    def call(values, *args):
        return compiled(*args)

    return call


def merge_step_logs(step_output, values):
    """Adds `values` to the logs a Keras TensorFlow `train_step` returns.

    Args:
        step_output: the logs dict.
        values: a dict of scalars.

    Examples:
        >>> merge_step_logs({"loss": 1.0}, {"lr": 0.1})
        {'loss': 1.0, 'lr': 0.1}
    """
    return {**step_output, **values}


def acting_snapshot(variables):
    """None: acting reads the variables, which `fit` keeps current.

    Args:
        variables: the variables acting reads.

    Examples:
        >>> acting_snapshot([]) is None
        True
    """
    return None


# ------------------------------------------------------ kernels and rules


def matmul_kernel_grad(x_shape, kernel_shape):
    """False: TensorFlow keeps its own convolution gradients (the mode
    variable `KERAS_DREAMER_CONV_GRAD` is still checked).

    Args:
        x_shape: the input shape `(N, H, W, C)`.
        kernel_shape: the kernel shape `(K, K, C, F)`.

    Examples:
        >>> matmul_kernel_grad((1024, 32, 32, 32), (5, 5, 32, 48))
        False
    """
    common.conv_grad_mode()
    return False


def conv2d_same(x, kernel):
    """A stride-1 'same' convolution, channels last (`keras.ops.conv`).

    Args:
        x: `[N, H, W, C]` inputs.
        kernel: `[K, K, C, F]` weights.

    Examples:
        >>> import numpy as np
        >>> x, kernel = np.ones((1, 3, 3, 1)), np.ones((3, 3, 1, 1))
        >>> y = conv2d_same(x, kernel)
        >>> np.asarray(y)[0, 1, 1, 0].item()
        9.0
    """
    matmul_kernel_grad(tuple(x.shape), tuple(kernel.shape))
    return ops.conv(x, kernel, strides=1, padding="same")


def pool_conv_on_blocks(height, width, channels):
    """Whether a 'same' convolution + 2x2 max pooling runs on the 2x2
    space-to-depth blocks: on a CPU (oneDNN) for inputs of at most 16
    channels, on an accelerator for at most 4.

    Args:
        height: input height.
        width: input width.
        channels: input channels.

    Examples:
        >>> pool_conv_on_blocks(64, 64, 3), pool_conv_on_blocks(8, 8, 512)
        (True, False)
    """
    cpu = on_cpu()
    if cpu:
        chosen, rule = channels <= 16, "inputs of <= 16 channels"
    else:
        chosen, rule = channels <= 4, "inputs of <= 4 channels"
    common.log_pool_rule(NAME, cpu, rule)
    return chosen


def block_matmul(x, kernel):
    """`einsum("ngi,gio->ngo", x, kernel)`: TensorFlow's batched product.

    Args:
        x: `[N, G, I]` inputs.
        kernel: `[G, I, O]` weights.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(12, dtype="float32").reshape(2, 3, 2)
        >>> np.asarray(block_matmul(x, np.ones((3, 2, 4), "float32")))[1, :, 0].tolist()
        [13.0, 17.0, 21.0]
    """
    return ops.einsum("ngi,gio->ngo", x, kernel)
