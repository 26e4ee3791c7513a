"""The one place that asks which Keras backend runs.

One module per backend (`jax`, `tensorflow`, `torch`) gives the same set of names,
and this package exports the running backend's, as Keras's own
`keras.src.backend` does:

- compiling: `compile_function(layer, fn)` (a function that reads and may
  update a layer's variables), `compile_with_values(variables, fn)` (a
  function run on given variable values), `merge_step_logs` (extra values
  in a Keras `train_step`'s logs), `scan` (where `keras.ops.scan` is not
  enough), `compiler_options()` and `keras_compiler_options()` (the
  compiler options of keras-dreamer's functions and of Keras's steps);
- acting: `acting_snapshot(variables)` (the values acting reads while
  `fit` runs, or None to read the variables) and `FIT_DETACHES_VARIABLES`;
- processes and devices: `process_count`, `process_index`,
  `local_device_count`, `on_cpu`, `device_memory`, `wait_for_devices`,
  `SUPPORTS_DISTRIBUTION`, `DISTRIBUTION_LIMITS` (why not) and what
  `keras_dreamer.distribute` builds on;
- kernels and their speed rules: `conv2d_same`, `matmul_kernel_grad`,
  `pool_conv_on_blocks`, `block_matmul`.

`docs/contributing.md` says how to add a backend. Under a backend without
a module here, `name()` works and every other name raises
`NotImplementedError`, naming the supported backends.
"""

import keras

SUPPORTED = ("jax", "tensorflow", "torch")


def name():
    """The running Keras backend's name (`keras.config.backend()`).

    Examples:
        >>> name() in SUPPORTED
        True
    """
    return keras.config.backend()


if name() == "jax":
    from keras_dreamer.backend.jax import *  # noqa: F403
elif name() == "tensorflow":
    from keras_dreamer.backend.tensorflow import *  # noqa: F403
elif name() == "torch":
    from keras_dreamer.backend.torch import *  # noqa: F403
else:

    def __getattr__(attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise NotImplementedError(
            f"keras_dreamer supports the {', '.join(SUPPORTED)} backends, "
            f"not {name()!r} (keras_dreamer.backend.{attribute})."
        )
