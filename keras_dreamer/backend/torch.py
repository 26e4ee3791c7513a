"""The PyTorch backend: keras-dreamer's functions as PyTorch runs them.

Functions run eagerly under `torch.no_grad()` (they only infer: acting,
reports); the variables are always current, so acting needs no snapshot;
one process and one device (`keras.distribution` is JAX-only, see
`keras_dreamer.distribute`). The speed rules below were measured on CPUs;
their numbers are in `docs/backends.md` and `benchmarks/RESULTS.md`.
"""

import contextlib

import keras
import torch
from keras import ops

from keras_dreamer.backend import common
from keras_dreamer.backend.common import assign_local  # noqa: F401 -- one process
from keras_dreamer.backend.common import broadcast_one_to_all  # noqa: F401 -- one process
from keras_dreamer.backend.common import local_values  # noqa: F401 -- one process
from keras_dreamer.backend.common import process_allgather  # noqa: F401 -- one process
from keras_dreamer.backend.common import value_device_count  # noqa: F401 -- one process

NAME = "torch"
SUPPORTS_DISTRIBUTION = False
# Why `kd.distribute` refuses several devices or processes here.
DISTRIBUTION_LIMITS = (
    "On PyTorch, Keras 3.15 applies keras.distribution only in its JAX "
    "trainer, and keras-dreamer does not wrap the torch trainer in "
    "torch.distributed (DDP)."
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
    """Whether Keras computes on the CPU (where it puts new tensors).

    Examples:
        >>> isinstance(on_cpu(), bool)
        True
    """
    return ops.convert_to_tensor(0.0).device.type == "cpu"


def process_count():
    """Always 1: one process on PyTorch.

    Examples:
        >>> process_count()
        1
    """
    return 1


def process_index():
    """Always 0: one process on PyTorch.

    Examples:
        >>> process_index()
        0
    """
    return 0


def local_device_count():
    """Always 1: one device on PyTorch.

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
    """Not available: PyTorch trains on one device.

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
    raise NotImplementedError("PyTorch trains on one device.")


def distributed_initialized():
    """Whether `torch.distributed` was started in this process (keras-dreamer
    never starts it; `keras_dreamer.distribute` refuses such a run).

    Examples:
        >>> distributed_initialized()
        False
    """
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def distribution_set(model):
    """Whether a `keras.distribution` was set (which PyTorch would ignore).

    Args:
        model: the model about to be trained (unused on PyTorch).

    Examples:
        >>> distribution_set(None)
        False
    """
    return keras.distribution.distribution() is not None


def device_memory():
    """Memory use of the GPU PyTorch computes on.

    Returns:
        A dict like `{"device0_mem_gb": 1.5, "device0_mem_peak_gb": 2.0}`;
        empty on a CPU.

    Examples:
        >>> isinstance(device_memory(), dict)
        True
    """
    if on_cpu() or not torch.cuda.is_available():
        return {}
    gib = float(1 << 30)
    return {
        "device0_mem_gb": torch.cuda.memory_allocated() / gib,
        "device0_mem_peak_gb": torch.cuda.max_memory_allocated() / gib,
    }


def wait_for_devices():
    """Waits until every kernel queued on the GPU has ended (CPU ops are
    synchronous).

    Examples:
        >>> wait_for_devices()
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


# --------------------------------------------------------------- compiling


def compiler_options():
    """None: PyTorch runs eagerly here (the mode variable
    `KERAS_DREAMER_XLA_OPTIONS` is still checked).

    Examples:
        >>> compiler_options() is None
        True
    """
    common.compiler_options_mode()
    return None


@contextlib.contextmanager
def keras_compiler_options():
    """Nothing to set: Keras's PyTorch trainer runs as it does.

    Examples:
        >>> with keras_compiler_options():
        ...     pass
    """
    compiler_options()
    yield


def scan(fn, init, xs, unroll=1):
    """`keras.ops.scan` (a Python loop on PyTorch); `ys` need not mirror
    the carry.

    Args:
        fn: the step function `fn(carry, x) -> (carry, y)`.
        init: the initial carry.
        xs: the per-step inputs, each `[T, ...]`.
        unroll: ignored (the loop runs eagerly).

    Examples:
        >>> import numpy as np
        >>> def step(total, x):
        ...     return total + x, total + x
        >>> total, ys = scan(step, np.float32(0), np.ones(3, "float32"))
        >>> float(total), ops.convert_to_numpy(ys).tolist()
        (3.0, [1.0, 2.0, 3.0])
    """
    return ops.scan(fn, init, xs)


def _no_grad(fn):
    def call(*args):
        with torch.no_grad():
            return fn(*args)

    return call


# Below this many rows (e.g. imagination's start states) compiling costs more
# than it saves in a run of a few hundred updates; see docs/backends.md.
_STEP_COMPILE_MIN_ROWS = 256


def gradient_free_step(fn):
    """A loop body run without recording gradients, compiled with
    `torch.compile` once its carry has many rows.

    Keras runs a torch train step eagerly, one small operation at a time;
    a loop body called many times per step (imagination) spends most of its
    time dispatching them. From `_STEP_COMPILE_MIN_ROWS` rows in the carry's
    first tensor the body is compiled (once per shape; the first call takes
    seconds); smaller carries, and `KERAS_DREAMER_STEP_COMPILE=off`, run it
    eagerly.

    Args:
        fn: a loop body `fn(carry, x) -> (carry, y)` whose outputs need no
            gradient.

    Examples:
        >>> import numpy as np
        >>> step = gradient_free_step(lambda carry, x: (carry + x, x))
        >>> carry, _ = step(np.zeros(2, "float32"), np.ones(2, "float32"))
        >>> ops.convert_to_numpy(carry).tolist()
        [1.0, 1.0]
    """
    compiled = []

    def call(carry, x):
        first = keras.tree.flatten(carry)[0]
        rows = first.shape[0] if len(getattr(first, "shape", ())) else 0
        run = fn
        if rows >= _STEP_COMPILE_MIN_ROWS and common.step_compile_mode() == "auto":
            if not compiled:
                common.log_once(
                    "step_compile",
                    "torch: loop bodies over >= %d rows "
                    "(imagination) run compiled by torch.compile "
                    "(KERAS_DREAMER_STEP_COMPILE=off keeps them eager).",
                    _STEP_COMPILE_MIN_ROWS,
                )
                compiled.append(torch.compile(fn, dynamic=False))
            run = compiled[0]
        with torch.no_grad():
            return run(carry, x)

    return call


def compile_function(layer, fn):
    """`fn` run eagerly without recording gradients (it only infers); it
    reads and updates the layer's variables in place.

    Args:
        layer: the layer or model whose variables `fn` uses.
        fn: a function of tensors returning a nested structure of tensors.

    Examples:
        >>> import numpy as np
        >>> layer = keras.layers.Dense(2, kernel_initializer="ones")
        >>> layer.build((None, 3))
        >>> double = compile_function(layer, lambda x: 2.0 * layer(x))
        >>> ops.convert_to_numpy(double(np.ones((1, 3), "float32"))).tolist()
        [[6.0, 6.0]]
    """
    return _no_grad(fn)


def compile_with_values(variables, fn):
    """`call(values, *args)`: `fn` run eagerly without recording gradients;
    the variables are always current, so `values` is ignored.

    Args:
        variables: the variables `fn` reads (it must not assign them).
        fn: a function of tensors returning a nested structure of tensors.

    Examples:
        >>> import numpy as np
        >>> layer = keras.layers.Dense(1, kernel_initializer="ones")
        >>> layer.build((None, 2))
        >>> run = compile_with_values(layer.weights, lambda x: layer(x))
        >>> ops.convert_to_numpy(run(None, np.ones((1, 2), "float32"))).tolist()
        [[2.0]]
    """
    compiled = _no_grad(fn)

    def call(values, *args):
        return compiled(*args)

    return call


def merge_step_logs(step_output, values):
    """Adds `values` to the logs a Keras PyTorch `train_step` returns.

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
    """False: PyTorch keeps its own convolution gradients (the mode
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
        >>> ops.convert_to_numpy(y)[0, 1, 1, 0].item()
        9.0
    """
    matmul_kernel_grad(tuple(x.shape), tuple(kernel.shape))
    return ops.conv(x, kernel, strides=1, padding="same")


def pool_conv_on_blocks(height, width, channels):
    """Whether a 'same' convolution + 2x2 max pooling runs on the 2x2
    space-to-depth blocks: for inputs of at most 4 channels (the
    accelerator rule of the other backends, until measured here).

    Args:
        height: input height.
        width: input width.
        channels: input channels.

    Examples:
        >>> pool_conv_on_blocks(64, 64, 3), pool_conv_on_blocks(8, 8, 512)
        (True, False)
    """
    chosen, rule = channels <= 4, "inputs of <= 4 channels"
    common.log_pool_rule(NAME, on_cpu(), rule)
    return chosen


def block_matmul(x, kernel):
    """`einsum("ngi,gio->ngo", x, kernel)`: PyTorch's batched product.

    Args:
        x: `[N, G, I]` inputs.
        kernel: `[G, I, O]` weights.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(12, dtype="float32").reshape(2, 3, 2)
        >>> y = block_matmul(x, np.ones((3, 2, 4), "float32"))
        >>> ops.convert_to_numpy(y)[1, :, 0].tolist()
        [13.0, 17.0, 21.0]
    """
    return ops.einsum("ngi,gio->ngo", x, kernel)
