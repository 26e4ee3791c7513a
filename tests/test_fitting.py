"""Train-step plumbing in `keras_dreamer.fitting`."""

import keras
import numpy as np

import keras_dreamer as kd
from keras_dreamer import fitting


class LoggingModel(keras.Model):
    def train_step(self, *args, **kwargs):
        return fitting.add_optimizer_logs(self, super().train_step(*args, **kwargs))


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in (logs or {}).items()})


def one_weight_model():
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")(inputs)
    model = LoggingModel(inputs, outputs)
    optimizer = kd.optimizers.LaProp(learning_rate=1e-2, agc=0.0, warmup=0)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def test_optimizer_logs_are_those_of_each_step_by_name():
    # loss = (x . w)^2 with x = [1, 2], w = [1, 1]: gradient 2 * 3 * x.
    model = one_weight_model()
    record = Record()
    x, y = np.float32([[1.0, 2.0]]), np.float32([[0.0]])
    model.fit(x, y, epochs=3, verbose=0, callbacks=[record])
    np.testing.assert_allclose(
        record.logs[0]["opt/grad_norm"], np.sqrt(180.0), rtol=1e-5
    )
    np.testing.assert_allclose(record.logs[0]["opt/lr"], 1e-2, rtol=1e-6)
    # Later steps report their own (smaller) gradients, not a lagged value.
    for step, logs in enumerate(record.logs):
        assert logs["opt/grad_norm"] > 0
        if step:
            assert logs["opt/grad_norm"] < record.logs[step - 1]["opt/grad_norm"]


def test_optimizer_without_step_logs_adds_nothing():
    inputs = keras.Input((2,))
    model = LoggingModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    record = Record()
    model.fit(
        np.ones((1, 2), "float32"),
        np.ones((1, 1), "float32"),
        verbose=0,
        callbacks=[record],
    )
    assert not any(key.startswith("opt/") for key in record.logs[0])


def test_first_step_guard_is_a_callback_instance():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    guard = fitting.FirstStepGuard(model)
    assert isinstance(guard, fitting.FirstStepGuard)
    assert isinstance(guard, keras.callbacks.Callback)


def test_batch_frames_counts_batch_times_length():
    assert float(fitting.batch_frames({"is_first": np.zeros((3, 7), bool)})) == 21.0


def test_laprop_hands_its_step_logs_over_once():
    optimizer = kd.optimizers.LaProp(learning_rate=1e-2, agc=0.0, warmup=0)
    weight = keras.Variable(np.ones(3, "float32"))
    assert optimizer.take_step_logs() == {}  # before any apply
    grad = np.float32([1.0, -2.0, 2.0])
    optimizer.apply([keras.ops.convert_to_tensor(grad)], [weight])
    logs = optimizer.take_step_logs()
    assert sorted(logs) == ["opt/grad_norm", "opt/lr"]
    np.testing.assert_allclose(float(logs["opt/grad_norm"]), np.linalg.norm(grad))
    np.testing.assert_allclose(float(logs["opt/lr"]), 1e-2, rtol=1e-6)
    assert optimizer.take_step_logs() == {}  # taken: nothing for another step
