"""The JAX backend: keras-dreamer's functions as JAX runs them.

Functions are jitted (`jax.jit` with `jax_compiler.jax_compiler_options()`)
as pure functions of the variables' values; Keras's JAX `fit` holds the
variables' values outside the variables, so acting reads a snapshot; data
parallel and multi-process runs go through `keras.distribution` and JAX's
collectives. The speed rules below were measured on CPUs; their numbers
are in `docs/backends.md` and `benchmarks/RESULTS.md`.
"""

import jax
import keras
from jax.experimental import multihost_utils
from keras import ops

from keras_dreamer.backend import common
from keras_dreamer.backend import jax_conv
from keras_dreamer.backend.common import gradient_free_step  # noqa: F401 -- compiled whole
from keras_dreamer.backend.jax_compiler import jax_compiler_options
from keras_dreamer.backend.jax_compiler import jit
from keras_dreamer.backend.jax_compiler import keras_jit_options

NAME = "jax"
# `keras.distribution` (data parallel, several processes) works here.
SUPPORTS_DISTRIBUTION = True
# Keras's `fit` detaches the variables' values while it runs.
# Nothing: `kd.distribute` distributes on JAX.
DISTRIBUTION_LIMITS = ""
FIT_DETACHES_VARIABLES = True

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

compiler_options = jax_compiler_options
keras_compiler_options = keras_jit_options


# ----------------------------------------------------------------- devices


def on_cpu():
    """Whether JAX computes on the CPU (no GPU or TPU).

    Examples:
        >>> isinstance(on_cpu(), bool)
        True
    """
    return jax.default_backend() == "cpu"


def process_count():
    """The processes of the run (`jax.process_count()`).

    Examples:
        >>> process_count()
        1
    """
    return jax.process_count()


def process_index():
    """This process's index (`jax.process_index()`).

    Examples:
        >>> process_index()
        0
    """
    return jax.process_index()


def local_device_count():
    """This process's devices (`jax.local_device_count()`).

    Examples:
        >>> local_device_count() >= 1
        True
    """
    return jax.local_device_count()


def local_device_names():
    """This process's devices, as strings, for error messages.

    Examples:
        >>> len(local_device_names()) == local_device_count()
        True
    """
    return [str(device) for device in jax.local_devices()]


def mesh_device_names(per_process):
    """The first `per_process` devices of every process, process by process,
    named as `keras.distribution.DataParallel(devices=...)` takes them.

    Args:
        per_process: devices per process.

    Examples:
        >>> mesh_device_names(1) == [f"{jax.devices()[0].platform}:0"]
        True
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    chosen = []
    for index in range(jax.process_count()):
        mine = [d for d in devices if d.process_index == index]
        chosen.extend(mine[:per_process])
    return [f"{d.platform}:{d.id}" for d in chosen]


def distributed_initialized():
    """Whether `jax.distributed` was started in this process.

    Examples:
        >>> distributed_initialized()
        False
    """
    return jax.distributed.is_initialized()


def distribution_set(model):
    """Whether a `keras.distribution` is set (Keras applies it here).

    Args:
        model: the model about to be trained (unused on JAX).

    Examples:
        >>> distribution_set(None)
        False
    """
    return keras.distribution.distribution() is not None


def value_device_count(value):
    """The devices a variable's value is laid out on.

    Args:
        value: a JAX array.

    Examples:
        >>> value_device_count(jax.numpy.zeros(2))
        1
    """
    return len(value.sharding.device_set)


def local_values(values):
    """One-device copies of replicated values: each replicated array becomes
    its shard on this process's first device; other values pass through.

    Args:
        values: a list of arrays.

    Returns:
        A list of arrays.

    Examples:
        >>> import numpy as np
        >>> local_values([np.zeros(2)])[0].tolist()
        [0.0, 0.0]
    """
    out = []
    for value in values:
        if isinstance(value, jax.Array) and len(value.sharding.device_set) > 1:
            value = value.addressable_data(0)
        out.append(value)
    return out


def assign_local(variable, value):
    """Writes a value computed on one device back into `variable`; in a
    multi-process run nothing is written (only one process computed it).

    Args:
        variable: a Keras variable.
        value: its new value.

    Examples:
        >>> variable = keras.Variable(0.0)
        >>> assign_local(variable, 1.0)
        >>> float(variable.value)
        1.0
    """
    if jax.process_count() > 1:
        return
    variable.assign(value)


def broadcast_one_to_all(tree):
    """Process 0's values of a tree of numpy arrays, in every process.

    Args:
        tree: a nested structure of numeric numpy arrays.

    Examples:
        >>> import numpy as np
        >>> broadcast_one_to_all({"step": np.int32(8)})["step"].item()
        8
    """
    return multihost_utils.broadcast_one_to_all(tree)


def process_allgather(value):
    """Every process's value of a numpy array, stacked in process order.

    Args:
        value: a numpy array of the same shape and dtype in every process.

    Examples:
        >>> import numpy as np
        >>> np.asarray(process_allgather(np.int32(3))).tolist()
        [3]
    """
    return multihost_utils.process_allgather(value)


def device_memory():
    """Memory use of this process's devices that report it (GPUs, TPUs).

    Returns:
        A dict like `{"device0_mem_gb": 1.5, "device0_mem_peak_gb": 2.0,
        "device0_mem_frac": 0.1}`; empty on a CPU.

    Examples:
        >>> isinstance(device_memory(), dict)
        True
    """
    gib = float(1 << 30)
    metrics = {}
    for index, device in enumerate(jax.local_devices()):
        stats = device.memory_stats() or {}
        if "bytes_in_use" in stats:
            metrics[f"device{index}_mem_gb"] = stats["bytes_in_use"] / gib
            peak = stats.get("peak_bytes_in_use", stats["bytes_in_use"])
            metrics[f"device{index}_mem_peak_gb"] = peak / gib
            if stats.get("bytes_limit"):
                metrics[f"device{index}_mem_frac"] = (
                    stats["bytes_in_use"] / stats["bytes_limit"]
                )
    return metrics


def wait_for_devices():
    """Waits until every computation dispatched to this process's devices ended.

    JAX dispatches asynchronously: a train step interrupted by Ctrl-C may
    still run on the device's threads; the process must not exit (and tear
    the runtime down) under it.

    Examples:
        >>> wait_for_devices()
    """
    for array in jax.live_arrays():
        try:
            array.block_until_ready()
        except Exception:  # a deleted or failed array: nothing runs for it
            pass


# --------------------------------------------------------------- compiling


def scan(fn, init, xs, unroll=1):
    """`keras.ops.scan` (`jax.lax.scan`), whose `ys` need not mirror the carry.

    Args:
        fn: the step function `fn(carry, x) -> (carry, y)`.
        init: the initial carry.
        xs: the per-step inputs, each `[T, ...]`.
        unroll: loop unrolling factor.

    Examples:
        >>> import numpy as np
        >>> def step(total, x):
        ...     return total + x, total + x
        >>> total, ys = scan(step, np.float32(0), np.ones(3, "float32"))
        >>> float(total), np.asarray(ys).tolist()
        (3.0, [1.0, 2.0, 3.0])
    """
    return ops.scan(fn, init, xs, unroll=unroll)


def compile_function(layer, fn):
    """`fn` jitted as a pure function of `layer`'s variable values, passed in
    at every call; the non-trainable values it updates (seed generators) are
    written back. Replicated values run on one local device.

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

    def pure(values, *args):
        variables = layer.variables
        mapping = list(zip(variables, values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = fn(*args)
        updated = [scope.get_current_value(v) for v in variables]
        updated = [v.value if u is None else u for v, u in zip(variables, updated)]
        return outputs, updated

    jitted = jit(pure)

    def call(*args):
        variables = layer.variables
        values = local_values([v.value for v in variables])
        outputs, updated = jitted(values, *args)
        for variable, value in zip(variables, updated):
            if not variable.trainable:
                assign_local(variable, value)
        return outputs

    return call


def compile_with_values(variables, fn):
    """`call(values, *args)`: `fn` jitted to run on given variable values
    (`None`: the variables' current values, on one local device).

    Args:
        variables: the variables `fn` reads (it must not assign them).
        fn: a function of tensors returning a nested structure of tensors.

    Examples:
        >>> import numpy as np
        >>> layer = keras.layers.Dense(1, kernel_initializer="ones")
        >>> layer.build((None, 2))
        >>> run = compile_with_values(layer.weights, lambda x: layer(x))
        >>> np.asarray(run([np.ones((2, 1)), np.zeros(1)], np.ones((1, 2)))).tolist()
        [[2.0]]
    """
    variables = list(variables)

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jit(pure)

    def call(values, *args):
        if values is None:
            values = local_values([v.value for v in variables])
        return jitted(list(values), *args)

    return call


def merge_step_logs(step_output, values):
    """Adds `values` to the logs of a Keras JAX `train_step`'s `(logs, state)`.

    Args:
        step_output: `(logs, state)`.
        values: a dict of scalars.

    Examples:
        >>> merge_step_logs(({"loss": 1.0}, "state"), {"lr": 0.1})
        ({'loss': 1.0, 'lr': 0.1}, 'state')
    """
    logs, state = step_output
    return {**logs, **values}, state


def acting_snapshot(variables):
    """Copies of the variables' current values (on one local device), for
    acting while `fit` holds the live ones: the next train step donates
    (frees) the buffers the variables hold now.

    Args:
        variables: the variables acting reads.

    Returns:
        A list of arrays.

    Examples:
        >>> len(acting_snapshot([keras.Variable(1.0)]))
        1
    """
    return [ops.copy(value) for value in local_values([v.value for v in variables])]


# ------------------------------------------------------ kernels and rules


def matmul_kernel_grad(x_shape, kernel_shape):
    """Whether `conv2d_same` computes this convolution's kernel gradient as
    matrix products (`jax_conv`).

    `KERAS_DREAMER_CONV_GRAD`: `"xla"` never, `"matmul"` always (square
    kernels, static shapes), `"auto"` on a CPU only, for layers of at least
    32x32 pixels or at least 1,024 input x output channel pairs, where this
    was measured faster. The choice is logged once per process.

    Args:
        x_shape: the input shape `(N, H, W, C)`.
        kernel_shape: the kernel shape `(K, K, C, F)`.

    Examples:
        >>> import os
        >>> os.environ["KERAS_DREAMER_CONV_GRAD"] = "xla"
        >>> matmul_kernel_grad((1024, 32, 32, 32), (5, 5, 32, 48))
        False
        >>> del os.environ["KERAS_DREAMER_CONV_GRAD"]
    """
    mode = common.conv_grad_mode()
    if mode == "xla":
        return False
    if any(d is None for d in x_shape) or kernel_shape[0] != kernel_shape[1]:
        return False
    if mode == "matmul":
        return True
    if not on_cpu():
        return False
    _, height, width, channels = x_shape
    chosen = height * width >= 1024 or channels * kernel_shape[-1] >= 1024
    common.log_once(
        "auto",
        "JAX on a CPU: convolution kernel gradients of layers with >= 32x32 "
        "pixels or >= 1,024 channel pairs run as matrix products "
        "(keras_dreamer.backend.jax_conv; %s=xla turns this off).",
        common.CONV_GRAD_ENV,
    )
    return chosen


def conv2d_same(x, kernel):
    """A stride-1 'same' convolution, channels last; its kernel gradient as
    matrix products where `matmul_kernel_grad` says so.

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
    if matmul_kernel_grad(tuple(x.shape), tuple(kernel.shape)):
        return jax_conv.conv2d_same(
            ops.convert_to_tensor(x), ops.convert_to_tensor(kernel)
        )
    return ops.conv(x, kernel, strides=1, padding="same")


def pool_conv_on_blocks(height, width, channels):
    """Whether a 'same' convolution + 2x2 max pooling runs on the 2x2
    space-to-depth blocks: on a CPU for inputs of at most 4 channels or at
    least 32x32 pixels, on an accelerator for at most 4 channels.

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
        chosen = channels <= 4 or height * width >= 1024
        rule = "inputs of <= 4 channels or >= 32x32 pixels"
    else:
        chosen, rule = channels <= 4, "inputs of <= 4 channels"
    common.log_pool_rule(NAME, cpu, rule)
    return chosen


def block_matmul(x, kernel):
    """`einsum("ngi,gio->ngo", x, kernel)` as G matrix products stacked on
    the block axis, which XLA's CPU backend lays out better for the
    consumers than its batched product.

    Args:
        x: `[N, G, I]` inputs.
        kernel: `[G, I, O]` weights.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(12, dtype="float32").reshape(2, 3, 2)
        >>> np.asarray(block_matmul(x, np.ones((3, 2, 4), "float32")))[1, :, 0].tolist()
        [13.0, 17.0, 21.0]
    """
    blocks = [ops.matmul(x[:, g], kernel[g]) for g in range(kernel.shape[0])]
    return ops.stack(blocks, axis=1)
