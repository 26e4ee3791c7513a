"""Logger: step stamping, value rules, bad input, isolation, threads, close."""

import json
import os
import threading
import time

import numpy as np
import pytest

from keras_dreamer.logger import Logger
from keras_dreamer.logger import OutputWarning
from keras_dreamer.logger import make_output
from keras_dreamer.logger.outputs import AsyncOutput
from keras_dreamer.logger.outputs import CallableOutput
from tests.helpers import require


class Counter:
    """A step counter object, like the training loop's."""

    def __init__(self):
        self.value = 0

    def __int__(self):
        return self.value


@pytest.mark.backend_independent
def test_step_is_read_at_add_time_and_multiplied():
    rows = []
    counter = Counter()
    logger = Logger(counter, [rows.extend], multiplier=4)
    logger.add({"a": 1.0})
    counter.value = 3
    logger.add({"b": 2.0}, prefix="train")
    assert rows == []  # nothing reaches outputs before write()
    logger.write()
    assert [(step, name) for step, name, _ in rows] == [(0, "a"), (12, "train/b")]
    logger.write()  # an empty buffer writes nothing
    assert len(rows) == 2


@pytest.mark.backend_independent
def test_every_output_gets_the_same_summaries_tuple():
    seen = []
    logger = Logger(1, [seen.append, seen.append])
    logger.add({"x": 1.0})
    logger.write()
    assert len(seen) == 2 and seen[0] is seen[1] and isinstance(seen[0], tuple)


@pytest.mark.backend_independent
def test_values_reach_outputs_as_numpy_and_are_copied():
    rows = []
    logger = Logger(0, [rows.extend])
    array = np.zeros((2, 3))
    logger.add({"s": 3, "f": np.float32(0.5), "t": "text", "b": np.bytes_(b"hi")})
    logger.add({"i": array, "l": [1, 2, 3], "bf": np.float16(1.5)})
    array[:] = 1
    logger.write()
    values = {name: value for _, name, value in rows}
    assert isinstance(values["s"], np.integer) and values["s"].ndim == 0
    assert values["f"].dtype == np.float32
    assert values["t"] == "text" and values["b"] == "hi"
    np.testing.assert_array_equal(values["i"], 0)
    assert values["l"].tolist() == [1, 2, 3]


def test_arrays_of_the_active_backend_are_accepted(backend):
    rows = []
    logger = Logger(0, [rows.extend])
    if backend == "jax":
        jnp = require("jax.numpy")
        values = {"x": jnp.ones(()), "v": jnp.ones((2, 4, 4, 3), jnp.bfloat16)}
    else:
        tf = require("tensorflow")
        values = {"x": tf.ones(()), "v": tf.ones((2, 4, 4, 3), tf.bfloat16)}
    logger.step = values["x"] * 7  # a backend scalar as the step
    logger.add(values)
    logger.write()
    (step, _, x), (_, _, video) = rows
    assert step == 7 and float(x) == 1.0
    assert isinstance(video, np.ndarray) and video.dtype == np.float32


@pytest.mark.backend_independent
def test_helpers_check_the_rank():
    rows = []
    logger = Logger(0, [rows.extend])
    logger.scalar("s", 1.0)
    logger.vector("v", [1.0, 2.0])
    logger.image("gray", np.zeros((4, 4)))
    logger.image("rgb", np.zeros((4, 4, 3)))
    logger.video("video", np.zeros((2, 4, 4, 1)))
    logger.text("text", "hello")
    for helper, value, match in [
        (logger.scalar, [1.0], "'bad'.*shape \\(1,\\).*scalar"),
        (logger.vector, 1.0, "'bad'.*vector"),
        (logger.image, np.zeros((2, 4, 4, 3)), "'bad'.*image"),
        (logger.video, np.zeros((4, 4, 3)), "'bad'.*video"),
    ]:
        with pytest.raises(ValueError, match=match):
            helper("bad", value)
    with pytest.raises(TypeError, match="'bad'.*str"):
        logger.text("bad", 1.0)
    logger.write()
    assert [name for _, name, _ in rows] == ["s", "v", "gray", "rgb", "video", "text"]


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "key, match",
    [
        ("x" * 201, "201 characters"),
        ("train loss", "invalid"),
        ("train/", "invalid"),
        ("/loss", "invalid"),
        ("a//b", "invalid"),
        ("loss:1", "invalid"),
        ("verlust/größe", "invalid"),
        ("", "invalid"),
        ("step", "reserved"),
    ],
)
def test_bad_keys_raise_at_add(key, match):
    logger = Logger(0, [])
    with pytest.raises(ValueError, match=match):
        logger.add({key: 1.0})


@pytest.mark.backend_independent
def test_keys_use_the_documented_character_set():
    rows = []
    logger = Logger(0, [rows.extend])
    keys = ["x" * 200, "train/loss/image", "a.b-c_D9/E", "fps/env"]
    logger.add(dict.fromkeys(keys, 1.0))
    logger.write()
    assert [name for _, name, _ in rows] == keys


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "value, error, match",
    [
        (np.zeros((1, 2, 3, 4, 3)), ValueError, "'bad' has shape \\(1, 2, 3, 4, 3\\)"),
        (object(), TypeError, "'bad'.*object"),
        (None, TypeError, "'bad'"),
        ({"nested": 1}, TypeError, "'bad'.*dict"),
        ([[1, 2], [3]], TypeError, "'bad'.*not array-like"),
        (1 + 2j, TypeError, "'bad'.*complex"),
        (np.array(["a", "b"]), ValueError, "'bad'.*str"),
        (np.zeros((0,)), ValueError, "'bad' is empty"),
        (np.zeros((4, 4, 5)), ValueError, "'bad'.*\\(4, 4, 5\\).*channels"),
        (np.zeros((2, 4, 4, 2)), ValueError, "'bad'.*video.*channels"),
    ],
)
def test_bad_values_raise_at_add_naming_the_key(value, error, match):
    logger = Logger(0, [])
    with pytest.raises(error, match=match):
        logger.add({"good": 1.0, "bad": value})
    logger.write()  # nothing of the failed add was buffered


@pytest.mark.backend_independent
def test_bad_steps_and_arguments():
    with pytest.raises(TypeError, match="step 'abc'"):
        Logger("abc", []).add({"x": 1.0})
    with pytest.raises(ValueError, match="negative"):
        Logger(-1, []).add({"x": 1.0})
    with pytest.raises(ValueError, match="multiplier"):
        Logger(0, [], multiplier=0)
    with pytest.raises(TypeError, match="make_output"):
        Logger(0, ["terminal"])
    with pytest.raises(TypeError, match="mapping"):
        Logger(0, []).add([("x", 1.0)])


class Broken:
    """A sink that always fails, like a dead network."""

    def __init__(self):
        self.calls = 0

    def __call__(self, summaries):
        self.calls += 1
        raise ConnectionError("network is down")


@pytest.mark.backend_independent
def test_a_raising_sink_never_stops_the_others(tmp_path):
    broken = Broken()
    logger = Logger(0, [CallableOutput(broken), make_output("jsonl", tmp_path)])
    with pytest.warns(OutputWarning) as record:
        for step in range(20):
            logger.step = step
            logger.add({"x": float(step)})
            logger.write()
        logger.close()
    assert len(record) == 1  # reported once
    message = str(record[0].message)
    assert "CallableOutput(Broken)" in message and "ConnectionError" in message
    assert "network is down" in message
    assert broken.calls == 20  # it keeps being called
    assert logger.failures == {"CallableOutput(Broken)": 20}
    with open(tmp_path / "metrics.jsonl") as file:
        assert [json.loads(line)["step"] for line in file] == list(range(20))


class FailingWorker(AsyncOutput):
    """An async output whose background writes fail from the second one on."""

    def __init__(self):
        super().__init__()
        self.writes = 0

    def _write(self, summaries):
        self.writes += 1
        if self.writes > 1:
            raise OSError("disk full")


@pytest.mark.backend_independent
def test_background_errors_surface_on_the_next_write_or_close():
    output = FailingWorker()
    rows = []
    logger = Logger(0, [output, rows.extend])
    with pytest.warns(
        OutputWarning, match="FailingWorker failed with OSError: disk full"
    ):
        for _ in range(3):
            logger.add({"x": 1.0})
            logger.write()
        logger.close()
    assert output.writes == 3 and len(rows) == 3
    assert logger.failures == {"FailingWorker": 2}  # writes 2 and 3


@pytest.mark.backend_independent
def test_strict_raises_after_every_output_got_the_write():
    rows = []
    logger = Logger(0, [Broken(), rows.extend], strict=True)
    logger.add({"x": 1.0})
    with pytest.raises(ConnectionError):
        logger.write()
    assert len(rows) == 1
    close_fails = Logger(0, [FailingWorker()], strict=True)
    for _ in range(2):
        close_fails.add({"x": 1.0})
        close_fails.write()
    with pytest.raises(OSError, match="disk full"):
        close_fails.close()


class SlowSink(AsyncOutput):
    """An async output that takes a while per write and records everything."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay
        self.rows = []
        self.active = 0
        self.max_active = 0

    def _write(self, summaries):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay)
        self.rows.extend(summaries)
        self.active -= 1


@pytest.mark.backend_independent
def test_write_returns_before_a_slow_output_finishes_and_close_drains():
    sink = SlowSink(0.2)
    logger = Logger(0, [sink])
    logger.add({"x": 1.0})
    start = time.perf_counter()
    logger.write()
    assert time.perf_counter() - start < 0.1
    assert sink.rows == []
    logger.close()
    assert len(sink.rows) == 1


@pytest.mark.backend_independent
def test_writes_from_several_threads_lose_nothing(tmp_path):
    sink = SlowSink(0.001)
    logger = Logger(0, [sink, make_output("jsonl", tmp_path)])
    barrier = threading.Barrier(4)

    def work(thread):
        barrier.wait()
        for i in range(50):
            logger.add({f"thread{thread}/value": float(i)})
            if i % 5 == 0:
                logger.write()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.close()
    assert len(sink.rows) == 200 and sink.max_active == 1
    with open(tmp_path / "metrics.jsonl") as file:
        lines = [json.loads(line) for line in file]
    assert sum(len(line) - 1 for line in lines) <= 200
    assert {key for line in lines for key in line} == {"step"} | {
        f"thread{t}/value" for t in range(4)
    }


@pytest.mark.backend_independent
def test_close_writes_pending_values_and_is_idempotent(tmp_path):
    sink = SlowSink(0.01)
    logger = Logger(0, [sink, make_output("jsonl", tmp_path)])
    for step in range(100):
        logger.step = step
        logger.add({"x": float(step)})
        if step % 10 == 0:
            logger.write()
    logger.close()  # the last 9 adds were never written explicitly
    logger.close()
    assert [step for step, _, _ in sink.rows] == list(range(100))
    with open(os.path.join(tmp_path, "metrics.jsonl")) as file:
        assert len(file.readlines()) == 100
    with pytest.raises(RuntimeError, match="closed"):
        logger.add({"x": 1.0})
    logger.write()


@pytest.mark.backend_independent
def test_context_manager_closes():
    sink = SlowSink(0.0)
    with Logger(3, [sink]) as logger:
        logger.scalar("x", 1.0)
    assert sink.rows == [(3, "x", 1.0)]
