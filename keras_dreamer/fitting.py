"""Training plumbing shared by the models that train with `fit`.

`compile_function` and `compile_with_values` compile a function that reads a
layer's variables (jitted on JAX, a `tf.function` on TensorFlow);
`StepValues` is a metric that carries each step's own values into the train
logs; `add_optimizer_logs` merges the optimizer's per-step values (gradient
norm, learning rate) into them; `frames_logs` gives the number of replayed
frames of a batch; `FirstStepGuard` keeps a model's weights when the first
step of `fit` fails. `WorldModel` and `Agent` use all of them.

The one place that reads a structure the Keras JAX trainer does not document
as public API (the position of the optimizer variables in the state tuple of
`train_step`) is `jax_optimizer_values`; it checks what it reads and fails
loudly, naming the Keras and JAX versions, if that structure changes.
"""

import keras
from keras import ops

from keras_dreamer.ops import backend


class StepValues(keras.metrics.Metric):
    """Holds the latest value of several scalars (no averaging over steps).

    Keras's loss tracker reports a running mean since the epoch start; this
    metric makes the train logs carry each step's own values instead.

    Args:
        names: the names of the scalars (the keys of `result()`).
        name: the metric's name.
        **kwargs: forwarded to `keras.metrics.Metric`.

    Examples:
        >>> values = StepValues(["loss", "loss/image"])
        >>> values.update_state({"loss": 2.0, "loss/image": 1.5})
        >>> values.update_state({"loss": 1.0, "loss/image": 0.5})
        >>> {k: float(v) for k, v in values.result().items()}
        {'loss': 1.0, 'loss/image': 0.5}
    """

    def __init__(self, names, name="step_values", **kwargs):
        super().__init__(name=name, **kwargs)
        self.names = tuple(names)
        self.values = [
            self.add_variable(shape=(), initializer="zeros", name=n.replace("/", "_"))
            for n in self.names
        ]

    def update_state(self, values):
        for name, variable in zip(self.names, self.values):
            variable.assign(ops.cast(values[name], variable.dtype))

    def result(self):
        return {name: variable.value for name, variable in zip(self.names, self.values)}

    def reset_state(self):
        for variable in self.values:
            variable.assign(0.0)


FRAMES_KEY = "frames"


def batch_frames(batch):
    """The number of frames `B * T` of a sequence batch, as a float32 scalar.

    The batch size and length are read from `is_first` (or `action`), so it
    works on traced tensors and with a partial last batch. Models add it to
    their train logs as `frames` (see `FRAMES_KEY`), which
    `DreamerReportCallback` turns into `fps/train`.

    Args:
        batch: a dict batch with `is_first` or `action` of shape `[B, T, ...]`.

    Returns:
        A float32 scalar tensor.

    Examples:
        >>> import numpy as np
        >>> float(batch_frames({"is_first": np.zeros((3, 5), bool)}))
        15.0
    """
    ref = batch["is_first"] if "is_first" in batch else batch["action"]
    shape = ops.shape(ref)
    return ops.cast(shape[0], "float32") * ops.cast(shape[1], "float32")


def frames_log(batch):
    """`{FRAMES_KEY: batch_frames(batch)}`: the frames entry of the train logs.

    A model's `compute_loss` merges it into its step values, so every train
    step reports the frames it consumed, whatever the data source.

    Examples:
        >>> import numpy as np
        >>> logs = frames_log({"action": np.zeros((2, 4, 3))})
        >>> {key: float(value) for key, value in logs.items()}
        {'frames': 8.0}
    """
    return {FRAMES_KEY: batch_frames(batch)}


def compile_function(layer, fn):
    """Compiles `fn(*args)`, a function that reads `layer`'s variables.

    On JAX the function is jitted as a pure function of the variable values
    (passed in at every call, so it always sees the current weights) and the
    variables it updates, such as seed-generator states, are written back.
    On TensorFlow it is a `tf.function`. Either way it is traced once per
    input shape, like a Keras train or predict function.

    Args:
        layer: the layer or model whose variables `fn` uses.
        fn: a function of tensors (nested structures allowed) returning a
            nested structure of tensors.

    Returns:
        A callable with the signature of `fn`.

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> layer = keras.layers.Dense(2, kernel_initializer="ones")
        >>> layer.build((None, 3))
        >>> double = compile_function(layer, lambda x: 2.0 * layer(x))
        >>> np.asarray(double(np.ones((1, 3), "float32"))).tolist()
        [[6.0, 6.0]]
    """
    if backend() == "jax":
        import jax

        def pure(values, *args):
            variables = layer.variables
            mapping = list(zip(variables, values))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                outputs = fn(*args)
            updated = [scope.get_current_value(v) for v in variables]
            updated = [v.value if u is None else u for v, u in zip(variables, updated)]
            return outputs, updated

        jitted = jax.jit(pure)

        def call(*args):
            variables = layer.variables
            outputs, updated = jitted([v.value for v in variables], *args)
            for variable, value in zip(variables, updated):
                if not variable.trainable:
                    variable.assign(value)
            return outputs

        return call
    import tensorflow as tf

    return tf.function(fn, reduce_retracing=True)


def add_optimizer_logs(model, step_output):
    """Adds the optimizer's per-step values to the logs of `Model.train_step`.

    The optimizer (see `keras_dreamer.optimizers.LaProp`) records values such
    as the gradient norm in its own variables during `apply`; its public
    `log_variables` property names them. The JAX trainer is stateless, so
    those values only exist in the new optimizer state that `train_step`
    returns (read by `jax_optimizer_values`); on TensorFlow they are read from
    the variables.

    Args:
        model: the model whose `super().train_step` produced `step_output`.
        step_output: `(logs, state)` on JAX, `logs` on TensorFlow.

    Returns:
        `step_output` with the optimizer's log values merged into the logs.

    Examples:
        A `Model.train_step` override that logs `opt/grad_norm` and
        `opt/lr` (this is what `WorldModel.train_step` does):

        >>> import keras
        >>> class Model(keras.Model):
        ...     def train_step(self, *args, **kwargs):
        ...         return add_optimizer_logs(self, super().train_step(*args, **kwargs))
    """
    optimizer = getattr(model, "optimizer", None)
    log_variables = getattr(optimizer, "log_variables", None)
    if not log_variables:
        return step_output
    if backend() == "jax":
        logs, state = step_output
        values = jax_optimizer_values(optimizer, state)
        logs = dict(logs)
        for name, variable in log_variables.items():
            logs[name] = values[id(variable)]
        return logs, state
    logs = dict(step_output)
    for name, variable in log_variables.items():
        logs[name] = ops.convert_to_tensor(variable)
    return logs


def _versions():
    try:
        import jax

        jax_version = jax.__version__
    except ImportError:  # pragma: no cover - jax is what calls this
        jax_version = "not installed"
    return f"keras {keras.__version__}, jax {jax_version}"


def jax_optimizer_values(optimizer, state):
    """The new values of `optimizer.variables` in a JAX `train_step` state.

    Keras's JAX trainer passes `(trainable_variables, non_trainable_variables,
    optimizer_variables, metrics_variables)` into and out of `train_step`
    (the layout its custom-train-step guide shows), but offers no accessor
    by name. This is the only function of the package that relies on that
    layout; it checks the count, shapes and dtypes of what it reads against
    `optimizer.variables` and raises a `RuntimeError` naming the Keras and JAX
    versions if they do not match.

    Args:
        optimizer: the model's optimizer.
        state: the state returned by the JAX `Model.train_step`.

    Returns:
        A dict from `id(variable)` to its new value.

    Raises:
        RuntimeError: the state does not have the expected layout.

    Examples:
        >>> import keras
        >>> optimizer = keras.optimizers.SGD()
        >>> optimizer.build([])
        >>> state = ([], [], [v.value for v in optimizer.variables], [])
        >>> len(jax_optimizer_values(optimizer, state)) == len(optimizer.variables)
        True
        >>> jax_optimizer_values(optimizer, ([], []))
        Traceback (most recent call last):
        ...
        RuntimeError: The Keras JAX trainer's train_step state no longer has ...
    """
    variables = list(optimizer.variables)
    values = None
    if isinstance(state, (tuple, list)) and len(state) == 4:
        values = state[2]
    ok = isinstance(values, (tuple, list)) and len(values) == len(variables)
    if ok:
        for variable, value in zip(variables, values):
            shape = tuple(getattr(value, "shape", ()) or ())
            dtype = str(getattr(value, "dtype", ""))
            if shape != tuple(variable.shape) or dtype != str(variable.dtype):
                ok = False
                break
    if not ok:
        raise RuntimeError(
            "The Keras JAX trainer's train_step state no longer has the layout "
            "(trainable, non_trainable, optimizer, metrics variables) that "
            "keras_dreamer.fitting.jax_optimizer_values reads (with "
            f"{_versions()}); opt/* logs cannot be collected. Please report it "
            "to keras-dreamer."
        )
    return {id(v): value for v, value in zip(variables, values)}


class FirstStepGuard(keras.callbacks.Callback):
    """Protects a model's weights from a failure in the first step of `fit`.

    On JAX, Keras detaches every variable's value while `fit` runs and
    reattaches the trained values afterwards; if the first train step fails
    (an error while tracing, a bad first batch), there are no trained values
    and the model would be left without weights. This callback keeps
    references to the values from `on_train_begin` until the first batch
    ends (JAX arrays are immutable, so nothing is copied) and `restore()`
    assigns them back (no step has changed them yet). On TensorFlow it does
    nothing.

    Args:
        model: the model whose `fit` it guards.

    Examples:
        What `WorldModel.fit` does:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> guard = FirstStepGuard(model)
        >>> isinstance(guard, FirstStepGuard)
        True
        >>> # try: model.fit(x, y, callbacks=[guard])
        >>> # except BaseException: guard.restore(); raise
        >>> guard.restore()  # nothing saved yet: a no-op
    """

    async_safe = True

    def __init__(self, model):
        super().__init__()
        self._guarded = model
        self._saved = None

    def _variables(self):
        model = self._guarded
        optimizer = getattr(model, "optimizer", None)
        return [
            *model.trainable_variables,
            *model.non_trainable_variables,
            *(optimizer.variables if optimizer is not None else []),
            *model.metrics_variables,
        ]

    def on_train_begin(self, logs=None):
        if backend() == "jax":
            self._saved = [(v, v.value) for v in self._variables()]

    def on_train_batch_end(self, batch, logs=None):
        self._saved = None

    def restore(self):
        """Puts back the values saved at `on_train_begin`, if still held."""
        if self._saved is None:
            return
        for variable, value in self._saved:
            variable.assign(value)
        self._saved = None


def compile_with_values(variables, fn):
    """Compiles `fn(*args)`, which reads `variables`, to run on given values.

    Returns `call(values, *args)`. On JAX, `values` (one array per variable,
    in order) stand in for the variables' values, so the function can run on
    a snapshot of the weights while `fit` holds the live ones elsewhere;
    `values=None` uses the variables' current values. On TensorFlow the
    variables are always current: `values` is ignored and the function is a
    `tf.function`. `fn` must not assign variables.

    Args:
        variables: the variables `fn` reads.
        fn: a function of tensors returning a nested structure of tensors.

    Returns:
        `call(values, *args)`.

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> layer = keras.layers.Dense(1, kernel_initializer="ones")
        >>> layer.build((None, 2))
        >>> run = compile_with_values(layer.weights, lambda x: layer(x))
        >>> np.asarray(run(None, np.ones((1, 2), "float32"))).tolist()
        [[2.0]]
    """
    variables = list(variables)
    if backend() == "jax":
        import jax

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(pure)

        def call(values, *args):
            if values is None:
                values = [v.value for v in variables]
            return jitted(list(values), *args)

        return call
    import tensorflow as tf

    compiled = tf.function(fn, reduce_retracing=True)

    def call(values, *args):
        return compiled(*args)

    return call
