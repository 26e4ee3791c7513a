"""Backend-agnostic math for the world model.

Everything here is written with `keras.ops`, so it runs on JAX and TensorFlow.
The few places where the backends must differ (the XLA-safe `scan` on
TensorFlow, collecting optimizer values into the train-step logs) are the
only backend branches of the package, and they live in this module.
"""

import numpy as np
from keras import backend as keras_backend
from keras import ops

_TINY = 1e-20


def backend():
    """The active Keras backend name ("jax" or "tensorflow").

    Returns:
        The value of `keras.backend.backend()`.

    Examples:
        >>> import keras
        >>> backend() == keras.backend.backend()
        True
    """
    return keras_backend.backend()


def symlog(x):
    """`sign(x) * log(1 + |x|)`: compresses large magnitudes, identity near 0.

    Args:
        x: a float tensor or array.

    Returns:
        A tensor of the same shape.

    Examples:
        >>> import numpy as np
        >>> np.asarray(symlog(np.float32([-9.0, 0.0, 99.0])), float).round(3).tolist()
        [-2.303, 0.0, 4.605]
    """
    return ops.sign(x) * ops.log1p(ops.abs(x))


def symexp(x):
    """The inverse of `symlog`: `sign(x) * (exp(|x|) - 1)`.

    Args:
        x: values in symlog space (a float tensor or array).

    Returns:
        The raw values, a tensor of the same shape.

    Examples:
        >>> import numpy as np
        >>> x = np.float32([-9.0, 99.0])
        >>> np.asarray(symexp(symlog(x)), float).round(3).tolist()
        [-9.0, 99.0]
    """
    return ops.sign(x) * ops.expm1(ops.abs(x))


# ----------------------------------------------------------------------------
# Two-hot regression over symexp-spaced bins.


def twohot_bins(num_bins=255, low=-20.0):
    """DreamerV3's symmetric two-hot bins, as a float32 numpy array.

    The negative half is `symexp(linspace(low, 0, (num_bins + 1) // 2))`; the
    positive half mirrors it, so the middle bin is exactly 0 and the bins are
    symexp-spaced in raw value space.

    Args:
        num_bins: odd number of bins (255 in DreamerV3).
        low: symlog of the most negative bin.

    Returns:
        np.ndarray of shape `(num_bins,)`, ascending.

    Raises:
        ValueError: `num_bins` is even or smaller than 3.

    Examples:
        >>> bins = twohot_bins(255)
        >>> bins.shape, float(bins[127]), float(bins[0]) == -float(bins[-1])
        ((255,), 0.0, True)
        >>> twohot_bins(5, low=-2.0).astype(float).round(3).tolist()
        [-6.389, -1.718, 0.0, 1.718, 6.389]
    """
    if num_bins < 3 or num_bins % 2 == 0:
        raise ValueError(f"num_bins must be odd and >= 3, got {num_bins}.")
    half = np.linspace(low, 0.0, (num_bins + 1) // 2, dtype=np.float64)
    half = np.sign(half) * np.expm1(np.abs(half))
    bins = np.concatenate([half, -half[:-1][::-1]])
    return bins.astype(np.float32)


def twohot_encode(x, bins):
    """Two-hot target for values `x` on `bins`, interpolating in raw space.

    Args:
        x: float tensor of any shape.
        bins: ascending bin values, shape `(K,)`.

    Returns:
        Float32 tensor of shape `x.shape + (K,)` whose last axis sums to 1 and
        whose expectation over `bins` equals `x` (clipped to the bin range).

    Examples:
        >>> import numpy as np
        >>> code = twohot_encode(np.float32([0.5]), np.float32([-1.0, 0.0, 1.0]))
        >>> np.asarray(code).tolist()
        [[0.0, 0.5, 0.5]]
    """
    x = ops.cast(x, "float32")
    bins = ops.convert_to_tensor(bins, "float32")
    num = bins.shape[0]
    xe = ops.expand_dims(x, -1)
    below = ops.sum(ops.cast(bins <= xe, "int32"), -1) - 1
    above = num - ops.sum(ops.cast(bins > xe, "int32"), -1)
    below = ops.clip(below, 0, num - 1)
    above = ops.clip(above, 0, num - 1)
    equal = ops.equal(below, above)
    dist_below = ops.where(equal, 1.0, ops.abs(ops.take(bins, below) - x))
    dist_above = ops.where(equal, 1.0, ops.abs(ops.take(bins, above) - x))
    total = dist_below + dist_above
    weight_below = dist_above / total
    weight_above = dist_below / total
    return ops.one_hot(below, num) * ops.expand_dims(weight_below, -1) + ops.one_hot(
        above, num
    ) * ops.expand_dims(weight_above, -1)


def twohot_mean(logits, bins):
    """Expected value of a two-hot distribution, summed symmetrically.

    The middle bin plus the mirrored halves are added pairwise so that uniform
    probabilities (zero logits, as at initialisation) give exactly 0.

    Args:
        logits: float tensor `[..., K]`.
        bins: the bins, shape `(K,)`, symmetric around the middle one.

    Returns:
        Float32 tensor `[...]`.

    Examples:
        >>> import numpy as np
        >>> bins = twohot_bins(255)
        >>> float(np.asarray(twohot_mean(np.zeros((255,), "float32"), bins)))
        0.0
        >>> logits = np.log(np.asarray(twohot_encode(np.float32(3.0), bins)) + 1e-30)
        >>> round(float(np.asarray(twohot_mean(logits, bins))), 4)
        3.0
    """
    probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    bins = ops.convert_to_tensor(bins, "float32")
    mid = (bins.shape[0] - 1) // 2
    weighted = probs * bins
    lower = ops.flip(weighted[..., :mid], axis=-1)
    upper = weighted[..., mid + 1 :]
    return ops.sum(lower + upper, -1) + weighted[..., mid]


def twohot_loss(logits, target, bins):
    """Cross-entropy between `softmax(logits)` and the two-hot code of `target`.

    The reward loss of DreamerV3; no gradient flows into the target code.

    Args:
        logits: float tensor `[..., K]`.
        target: float tensor `[...]` of raw (not symlog) values.
        bins: the bins, shape `(K,)`.

    Returns:
        Float32 tensor `[...]`.

    Examples:
        >>> import numpy as np
        >>> bins = np.float32([-1.0, 0.0, 1.0])
        >>> loss = twohot_loss(np.zeros((3,), "float32"), np.float32(0.0), bins)
        >>> round(float(np.asarray(loss)), 4)  # log(3): uniform prediction
        1.0986
    """
    code = twohot_encode(target, bins)
    logp = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return -ops.sum(ops.stop_gradient(code) * logp, -1)


# ----------------------------------------------------------------------------
# Categorical latents.


def unimix_logits(logits, unimix=0.01):
    """Log-probabilities of `(1 - unimix) * softmax(logits) + unimix / K`.

    Computed in float32; the result is normalised (a valid log-probability).

    Args:
        logits: float tensor `[..., K]`.
        unimix: weight of the uniform mixture (0 disables it).

    Returns:
        Float32 log-probabilities `[..., K]`.

    Examples:
        >>> import numpy as np
        >>> logits = np.float32([0.0, -1e9])  # all mass on class 0
        >>> np.exp(np.asarray(unimix_logits(logits, 0.01), float)).round(3).tolist()
        [0.995, 0.005]
    """
    logits = ops.cast(logits, "float32")
    if not unimix:
        return ops.log_softmax(logits, axis=-1)
    probs = ops.softmax(logits, axis=-1)
    classes = logits.shape[-1]
    probs = (1.0 - unimix) * probs + unimix / classes
    return ops.log(probs)


def straight_through(onehot, logits):
    """`onehot` in the forward pass, the gradient of `softmax(logits)` backward.

    Computes `onehot + probs - stop_gradient(probs)` with
    `probs = softmax(logits)`.

    Args:
        onehot: float32 one-hot tensor `[..., K]`.
        logits: float tensor `[..., K]`.

    Returns:
        Float32 tensor equal to `onehot` whose gradient is that of `probs`.

    Examples:
        >>> import numpy as np
        >>> sample = straight_through(np.float32([0, 1]), np.float32([0.0, 0.0]))
        >>> np.asarray(sample).tolist()
        [0.0, 1.0]
    """
    probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    return onehot + (probs - ops.stop_gradient(probs))


def sample_onehot(logits, noise):
    """Straight-through one-hot sample of categorical `logits`.

    The sample is drawn by the Gumbel-max trick from `noise`, uniform in
    [0, 1) and drawn before any loop, so this function has no random state
    and is safe inside `scan` on every backend.

    Args:
        logits: float tensor `[..., K]` (normalised or not).
        noise: uniform noise of the same shape as `logits`.

    Returns:
        Float32 one-hot tensor `[..., K]` with straight-through gradients.

    Examples:
        >>> import numpy as np
        >>> logits = np.float32([[0.0, 5.0, 0.0]])
        >>> noise = np.random.default_rng(0).uniform(size=(1, 3))
        >>> np.asarray(sample_onehot(logits, noise)).tolist()
        [[0.0, 1.0, 0.0]]
    """
    logits = ops.cast(logits, "float32")
    noise = ops.clip(ops.cast(noise, "float32"), _TINY, 1.0 - 1e-7)
    gumbel = -ops.log(-ops.log(noise))
    index = ops.argmax(ops.stop_gradient(logits) + gumbel, axis=-1)
    onehot = ops.one_hot(index, logits.shape[-1], dtype="float32")
    return straight_through(onehot, logits)


def mode_onehot(logits):
    """Straight-through one-hot of the most likely class.

    Args:
        logits: float tensor `[..., K]`.

    Returns:
        Float32 one-hot tensor `[..., K]` with straight-through gradients.

    Examples:
        >>> import numpy as np
        >>> np.asarray(mode_onehot(np.float32([0.1, 2.0, -1.0]))).tolist()
        [0.0, 1.0, 0.0]
    """
    logits = ops.cast(logits, "float32")
    index = ops.argmax(logits, axis=-1)
    return straight_through(
        ops.one_hot(index, logits.shape[-1], dtype="float32"), logits
    )


def categorical_kl(p_logits, q_logits):
    """`KL(p || q)` over the last axis, for (possibly unnormalised) logits.

    Args:
        p_logits: float tensor `[..., K]`.
        q_logits: float tensor `[..., K]`.

    Returns:
        Float32 tensor `[...]`, non-negative.

    Examples:
        >>> import numpy as np
        >>> p = np.log(np.float32([0.5, 0.5]))
        >>> q = np.log(np.float32([0.9, 0.1]))
        >>> round(float(np.asarray(categorical_kl(p, q))), 4)
        0.5108
    """
    logp = ops.log_softmax(ops.cast(p_logits, "float32"), axis=-1)
    logq = ops.log_softmax(ops.cast(q_logits, "float32"), axis=-1)
    return ops.sum(ops.exp(logp) * (logp - logq), -1)


def categorical_entropy(logits):
    """Entropy over the last axis, for (possibly unnormalised) logits.

    Args:
        logits: float tensor `[..., K]`.

    Returns:
        Float32 tensor `[...]` in nats.

    Examples:
        >>> import numpy as np
        >>> round(float(np.asarray(categorical_entropy(np.zeros((4,), "float32")))), 4)
        1.3863
    """
    logp = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return -ops.sum(ops.exp(logp) * logp, -1)


def binary_logprob(logits, target):
    """Log-likelihood of a (soft) binary `target` under Bernoulli `logits`.

    `target * log(sigmoid(logits)) + (1 - target) * log(sigmoid(-logits))`;
    the continue loss is its negation.

    Args:
        logits: float tensor.
        target: float tensor of the same shape, values in [0, 1].

    Returns:
        Float32 tensor of the same shape.

    Examples:
        >>> import numpy as np
        >>> logprob = binary_logprob(np.float32(0.0), np.float32(1.0))
        >>> round(float(np.asarray(logprob)), 4)  # log(0.5)
        -0.6931
    """
    logits = ops.cast(logits, "float32")
    target = ops.cast(target, "float32")
    return target * ops.log_sigmoid(logits) + (1.0 - target) * ops.log_sigmoid(-logits)


# ----------------------------------------------------------------------------
# Loops.


def scan(fn, init, xs, unroll=1):
    """`carry, ys = scan(fn, init, xs)` over the leading axis of `xs`.

    `fn(carry, x) -> (carry, y)`; `carry`, `x` and `y` may be nested structures
    (dicts, tuples) of tensors, and `y` need not mirror `carry`.

    On JAX this is `keras.ops.scan` (`jax.lax.scan`). On TensorFlow it is a
    `tf.while_loop` with `maximum_iterations` over TensorArrays, whose
    gradient compiles under XLA (`jit_compile=True`), unlike `keras.ops.scan`
    there. The first step is run outside the loop to learn the structure and
    dtypes of `y`.

    Args:
        fn: the step function.
        init: the initial carry.
        xs: the per-step inputs, each `[T, ...]`, T >= 1.
        unroll: loop unrolling factor (honoured on JAX).

    Returns:
        `(final_carry, ys)` with every leaf of `ys` stacked to `[T, ...]`.

    Examples:
        >>> import numpy as np
        >>> def step(total, x):
        ...     total = total + x
        ...     return total, {"running": total}
        >>> total, ys = scan(step, np.float32(0.0), np.float32([1.0, 2.0, 3.0]))
        >>> float(np.asarray(total)), np.asarray(ys["running"]).tolist()
        (6.0, [1.0, 3.0, 6.0])
    """
    if backend() == "jax":
        return ops.scan(fn, init, xs, unroll=unroll)
    if backend() != "tensorflow":
        raise NotImplementedError(
            "keras_dreamer supports the jax and tensorflow backends, "
            f"not {backend()!r}."
        )
    import tensorflow as tf

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


# ----------------------------------------------------------------------------
# Compiled functions and train-step plumbing.


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
        import keras

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
    as the gradient norm in its own variables during `apply`. The JAX trainer
    is stateless, so those values only exist in the new optimizer state that
    `train_step` returns; on TensorFlow they are read from the variables.

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
        new_values = state[2]
        index = {id(v): i for i, v in enumerate(optimizer.variables)}
        logs = dict(logs)
        for name, variable in log_variables.items():
            logs[name] = new_values[index[id(variable)]]
        return logs, state
    logs = dict(step_output)
    for name, variable in log_variables.items():
        logs[name] = ops.convert_to_tensor(variable)
    return logs


class FirstStepGuard:
    """Protects a model's weights from a failure in the first step of `fit`.

    On JAX, Keras detaches every variable's value while `fit` runs and
    reattaches the trained values afterwards; if the first train step fails
    (an error while tracing, a bad first batch), there are no trained values
    and the model would be left without weights. This Keras callback keeps
    references to the values from `on_train_begin` until the first batch
    ends (JAX arrays are immutable, so nothing is copied) and `restore()`
    puts them back. On TensorFlow it does nothing.

    `FirstStepGuard(model)` returns a `keras.callbacks.Callback` with a
    `restore()` method for the model whose `fit` it guards.

    Examples:
        What `WorldModel.fit` does:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> guard = FirstStepGuard(model)
        >>> # try: model.fit(x, y, callbacks=[guard])
        >>> # except BaseException: guard.restore(); raise
        >>> guard.restore()  # nothing saved yet: a no-op
    """

    def __new__(cls, model):
        import keras

        class _Guard(keras.callbacks.Callback):
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
                if self._saved is None:
                    return
                for variable, value in self._saved:
                    if variable._value is None:  # detached by the JAX trainer
                        variable.assign(value)
                self._saved = None

        return _Guard(model)


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
        import keras

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
