"""Training plumbing shared by the models that train with `fit`.

`compile_function` and `compile_with_values` compile a function that reads a
layer's variables, the running backend's way (`keras_dreamer.backend`);
`StepValues` is a metric that carries each step's own values into the train
logs; `add_optimizer_logs` merges the optimizer's per-step values (gradient
norm, learning rate) into them; `frames_log` gives the number of replayed
frames of a batch; `FirstStepGuard` keeps a model's weights when the first
step of `fit` fails; `DreamerTraining` is the mixin that gives a model LaProp
by default and the optimizer's logs, and has Keras compile its step
functions with the backend's compiler options (`keras_dreamer.backend`).
`WorldModel` and `Agent` use all of them.

Only public Keras API is used: the optimizer's log values reach the logs by
name through the optimizer's `take_step_logs()`, never through the position of the
optimizer variables in the JAX trainer's state.
"""

import keras
from keras import ops

from keras_dreamer import backend
from keras_dreamer import distribute
from keras_dreamer.batch import FRAMES_KEY
from keras_dreamer.batch import LATENT_KEYS


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


def batch_frames(batch):
    """The number of frames `B * T` of a sequence batch, as a float32 scalar.

    A batch with replay context (`latent/*` keys) counts its T trained steps,
    not the leading context step.

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
    length = ops.cast(shape[1], "float32")
    if LATENT_KEYS[0] in batch:
        length = length - 1.0  # a replay-context step is not trained on
    return ops.cast(shape[0], "float32") * length


def frames_log(batch):
    """`{FRAMES_KEY: batch_frames(batch)}`: the frames entry of the train logs.

    A model's `compute_loss` merges it into its step values, so every train
    step reports the frames it consumed, whatever the data source.

    Args:
        batch: a dict batch with `is_first` or `action` of shape `[B, T, ...]`.

    Returns:
        A dict with one float32 scalar tensor.

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
    Replicated (data-parallel) values run on one local device (see
    `keras_dreamer.distribute.local_values`), so the function never waits for
    other devices or processes. On TensorFlow it is a `tf.function`. Either
    way it is traced once per input shape, like a Keras train or predict
    function.

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
    return backend.compile_function(layer, fn)


def add_optimizer_logs(model, step_output):
    """Adds the optimizer's per-step values to the logs of `Model.train_step`.

    An optimizer with a `take_step_logs()` method (see
    `keras_dreamer.optimizers.LaProp`) returns there the values its latest
    `apply` computed (gradient norm, learning rate), as tensors of the train
    step being traced. Keras calls `optimizer.apply` (or, on JAX,
    `optimizer.stateless_apply`, which calls `apply`) inside `train_step`, so
    they are merged into that step's logs by name, on both backends, without
    reading the trainer's state. An optimizer without `take_step_logs` adds
    nothing.

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
    take = getattr(optimizer, "take_step_logs", None)
    values = take() if take is not None else None
    if not values:
        return step_output
    return backend.merge_step_logs(step_output, values)


class DreamerTraining:
    """Mixin for a `keras.Model` trained with `fit` the DreamerV3 way.

    Gives `compile` `LaProp()` as the default optimizer (recompiled exactly
    from a saved config) and merges the optimizer's per-step values into
    the train logs (`add_optimizer_logs`). Keras compiles the train, test
    and predict steps with the backend's `compiler_options()`.
    List it before `keras.Model`.

    Examples:
        >>> import keras
        >>> class Model(DreamerTraining, keras.Model):
        ...     pass
        >>> model = Model()
        >>> model.compile()
        >>> type(model.optimizer).__name__
        'LaProp'
    """

    def compile(self, optimizer=None, jit_compile="auto", **kwargs):
        """`keras.Model.compile` with `LaProp()` as the default optimizer."""
        from keras_dreamer.optimizers import LaProp

        self._asked_jit_compile = jit_compile
        super().compile(
            optimizer=LaProp() if optimizer is None else optimizer,
            jit_compile=jit_compile,
            **kwargs,
        )

    def get_compile_config(self):
        # Keras saves `jit_compile` as resolved on this backend (True on JAX),
        # so a file saved here would force compilation on another backend
        # (torch.compile on PyTorch: many minutes); save what was asked.
        config = super().get_compile_config()
        if config and "jit_compile" in config:
            config = {**config, "jit_compile": self._asked_jit_compile}
        return config

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; ours only adds
        # a default, so recompiling from the saved config is exact.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, *args, **kwargs):
        return add_optimizer_logs(self, super().train_step(*args, **kwargs))

    # Keras compiles its step functions with the backend's compiler options
    # (on a JAX CPU, XLA's own convolutions; `keras_dreamer.backend`).
    def make_train_function(self, force=False):
        with backend.keras_compiler_options():
            return super().make_train_function(force)

    def make_test_function(self, force=False):
        with backend.keras_compiler_options():
            return super().make_test_function(force)

    def make_predict_function(self, force=False):
        with backend.keras_compiler_options():
            return super().make_predict_function(force)


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
        if backend.FIT_DETACHES_VARIABLES:
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
    `values=None` uses the variables' current values (replicated ones on one
    local device, see `keras_dreamer.distribute.local_values`). On TensorFlow the
    variables are always current: `values` is ignored and the function is a
    `tf.function` compiled with XLA (`jit_compile=True`). `fn` must not assign
    variables.

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
    return backend.compile_with_values(variables, fn)


def data_spec(data):
    """The batch dict (or its spec) of `fit`'s `x`, when it can be had cheaply.

    Args:
        data: what `fit` was given: a dict of arrays, a data source with a
            `batch_spec` (e.g. `kd.data.Collector`), a `tf.data.Dataset` (its
            `element_spec`) or anything else.

    Returns:
        A dict of arrays or specs, or None when there is nothing to check.

    Examples:
        >>> import numpy as np
        >>> sorted(data_spec({"image": np.zeros((1, 2, 4, 4, 3))}))
        ['image']
        >>> data_spec([1, 2]) is None
        True
    """
    if isinstance(data, dict):
        return data
    spec = getattr(data, "batch_spec", None)
    if spec is None:
        spec = getattr(data, "element_spec", None)
    if isinstance(spec, tuple) and spec and isinstance(spec[0], dict):
        spec = spec[0]
    return spec if isinstance(spec, dict) else None


def _batch_size(spec):
    """The batch size of a batch dict or spec (`is_first`'s first axis), or None."""
    first = (spec or {}).get("is_first")
    try:
        size = getattr(first, "shape", None)[0]
        return None if size is None else int(size)
    except (TypeError, ValueError, IndexError):
        return None


def guarded_fit(model, fit, x=None, y=None, *args, check_batch=None, **kwargs):
    """Runs a parent class's `fit` with the checks `WorldModel` and `Agent` share.

    1. The data's batch format is checked with `check_batch` before anything
       is traced (see `data_spec`), so a malformed batch fails at once;
       so is the distribution (`keras_dreamer.distribute.check_fit`).
    2. A `FirstStepGuard` keeps the weights if the first step fails.
    3. If training is interrupted (an exception, KeyboardInterrupt), the
       callbacks with a true `close_on_interrupt` attribute
       (`DreamerReportCallback`) are closed, so their pending logs are
       written; Keras skips `on_train_end` then.

    Args:
        model: the model being trained.
        fit: the parent's bound `fit` (`super().fit`).
        x: the training data.
        y: forwarded to `fit`.
        *args: forwarded to `fit`.
        check_batch: a function that raises on a bad batch dict, or None.
        **kwargs: forwarded to `fit`; `callbacks` gets the guard appended.

    Returns:
        What `fit` returns (a `keras.callbacks.History`).

    Examples:
        What `WorldModel.fit` does:

        >>> import keras
        >>> class Model(keras.Model):
        ...     def fit(self, x=None, y=None, *args, **kwargs):
        ...         return guarded_fit(self, super().fit, x, y, *args, **kwargs)
    """
    spec = data_spec(x)
    if spec is not None and check_batch is not None:
        check_batch(spec)
    distribute.check_fit(model, _batch_size(spec))
    guard = FirstStepGuard(model)
    callbacks = [*(kwargs.pop("callbacks", None) or []), guard]
    try:
        return fit(x, y, *args, callbacks=callbacks, **kwargs)
    except BaseException:
        guard.restore()
        for callback in callbacks:
            if getattr(callback, "close_on_interrupt", False):
                callback.close()
        raise
