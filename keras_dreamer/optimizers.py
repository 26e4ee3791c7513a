"""DreamerV3's optimizer: LaProp with adaptive gradient clipping and warm-up."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_dreamer")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate * min(1, step / warmup)`: a linear ramp from 0.

    Args:
        learning_rate: the rate after the warm-up.
        warmup: number of steps of the ramp.

    Examples:
        >>> round(float(LinearWarmup(1e-3, 10)(5)), 8)
        0.0005
    """

    def __init__(self, learning_rate, warmup):
        self.learning_rate = float(learning_rate)
        self.warmup = int(warmup)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.warmup <= 0:
            return ops.cast(self.learning_rate, "float32") + 0.0 * step
        return self.learning_rate * ops.minimum(1.0, step / self.warmup)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup": self.warmup}


@keras.saving.register_keras_serializable(package="keras_dreamer")
class LaProp(keras.optimizers.Optimizer):
    """LaProp with adaptive gradient clipping, as DreamerV3 trains its agent.

    Per variable and step `t`:

    1. adaptive gradient clipping: `g *= 1 / max(1, |g| / (agc * max(pmin, |w|)))`
       with norms over the whole variable;
    2. RMS normalisation: `nu = beta_2 * nu + (1 - beta_2) * g**2`,
       `u = g / (sqrt(nu / (1 - beta_2**t)) + epsilon)`;
    3. momentum of the normalised update: `mu = beta_1 * mu + (1 - beta_1) * u`,
       `w -= lr * mu / (1 - beta_1**t)`.

    A float learning rate gets a linear warm-up from 0 over `warmup` steps.
    The optimizer records the global gradient norm (before clipping) and the
    learning rate of the last step; `WorldModel` logs them as
    `opt/grad_norm` and `opt/lr` (read with `take_step_logs()`).

    Args:
        learning_rate: float or `LearningRateSchedule` (4e-5 in DreamerV3).
        beta_1: momentum decay.
        beta_2: second-moment decay.
        epsilon: added to the RMS (1e-20 in DreamerV3).
        agc: adaptive clipping threshold (0 disables it).
        agc_pmin: lower bound of the parameter norm in the clipping.
        warmup: warm-up steps for a float learning rate (0 disables it).
        name: optimizer name.
        **kwargs: forwarded to `keras.optimizers.Optimizer`.

    Examples:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer=LaProp(learning_rate=1e-3, warmup=10), loss="mse")
    """

    def __init__(
        self,
        learning_rate=4e-5,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-20,
        agc=0.3,
        agc_pmin=1e-3,
        warmup=1000,
        name="laprop",
        **kwargs,
    ):
        if isinstance(learning_rate, (int, float)) and warmup:
            learning_rate = LinearWarmup(learning_rate, warmup)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.agc = agc
        self.agc_pmin = agc_pmin
        self.warmup = warmup
        self._step_logs = {}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )
        self._grad_norm = self.add_variable((), initializer="zeros", name="grad_norm")
        self._last_lr = self.add_variable((), initializer="zeros", name="last_lr")

    @property
    def log_variables(self):
        """Per-step values to log, by metric name (empty before `build`)."""
        if not self.built:
            return {}
        return {"opt/grad_norm": self._grad_norm, "opt/lr": self._last_lr}

    def take_step_logs(self):
        """The per-step values the latest `apply` computed, handed over once.

        The train step reads them right after Keras applied the gradients
        (`kd.fitting.add_optimizer_logs` does): they are tensors of the trace
        that ran `apply` (on JAX the trainer applies the optimizer
        statelessly, so `log_variables` keep their old values until `fit`
        ends). Taking them clears them, so no value of one trace can reach
        another.

        Returns:
            `{"opt/grad_norm": ..., "opt/lr": ...}`: the global gradient norm
            before clipping and the learning rate; `{}` before the first
            `apply` or when already taken.

        Examples:
            >>> import keras
            >>> import numpy as np
            >>> optimizer = LaProp(learning_rate=0.1, warmup=0, agc=0.0)
            >>> weight = keras.Variable(np.ones(2, "float32"))
            >>> optimizer.apply([keras.ops.convert_to_tensor([3.0, 4.0])], [weight])
            >>> logs = optimizer.take_step_logs()
            >>> float(logs["opt/grad_norm"]), round(float(logs["opt/lr"]), 6)
            (5.0, 0.1)
            >>> optimizer.take_step_logs()
            {}
        """
        logs, self._step_logs = self._step_logs, {}
        return logs

    def moments(self, variable):
        """The `(momentum, velocity)` slots of `variable` (built optimizer).

        Args:
            variable: one of the variables the optimizer was built for.

        Returns:
            Two variables of the variable's shape: the momentum of the
            normalised update and the second moment of the gradient.
        """
        index = self._get_variable_index(variable)
        return self._momentums[index], self._velocities[index]

    def apply(self, grads, trainable_variables=None):
        present = [ops.cast(g, "float32") for g in grads if g is not None]
        norm = (
            ops.sqrt(sum(ops.sum(ops.square(g)) for g in present)) if present else 0.0
        )
        lr = ops.cast(self.learning_rate, "float32")
        super().apply(grads, trainable_variables)
        self._grad_norm.assign(norm)
        self._last_lr.assign(lr)
        self._step_logs = {"opt/grad_norm": norm, "opt/lr": lr}

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        grad = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        if self.agc:
            grad_norm = ops.sqrt(ops.sum(ops.square(grad)))
            param_norm = ops.maximum(
                self.agc_pmin, ops.sqrt(ops.sum(ops.square(variable)))
            )
            grad = grad / ops.maximum(1.0, grad_norm / (self.agc * param_norm))
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index], self._velocities[index]
        self.assign(
            velocity, self.beta_2 * velocity + (1.0 - self.beta_2) * ops.square(grad)
        )
        velocity_hat = velocity / (1.0 - ops.power(self.beta_2, step))
        update = grad / (ops.sqrt(velocity_hat) + self.epsilon)
        self.assign(momentum, self.beta_1 * momentum + (1.0 - self.beta_1) * update)
        momentum_hat = momentum / (1.0 - ops.power(self.beta_1, step))
        self.assign_sub(variable, lr * momentum_hat)

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "agc": self.agc,
            "agc_pmin": self.agc_pmin,
            "warmup": self.warmup,
        }
