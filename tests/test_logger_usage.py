"""FPS and Usage."""

import threading

import pytest

from keras_dreamer.logger import FPS
from keras_dreamer.logger import Usage
from keras_dreamer.logger import usage as usage_module

pytestmark = pytest.mark.backend_independent


class FakeClock:
    """A `time.perf_counter` stand-in that only moves when told to."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(usage_module.time, "perf_counter", fake)
    return fake


def test_fps_counts_from_several_threads_and_resets_on_read(clock):
    fps = FPS()
    threads = [
        threading.Thread(target=lambda: [fps.step(2) for _ in range(1000)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clock.now += 0.5
    assert fps.result() == 8000 / 0.5
    clock.now += 2.0
    assert fps.result() == 0.0  # a new interval with no events


def test_fps_result_without_reset_keeps_counting(clock):
    fps = FPS()
    fps.step(10)
    clock.now += 1.0
    assert fps.result(reset=False) == 10.0
    fps.step(30)
    clock.now += 1.0
    assert fps.result() == 20.0  # 40 events over the 2 s since the start
    assert fps.result() == 0.0  # no time has passed in the new interval


def test_usage_reports_process_and_system_metrics():
    usage = Usage()
    sum(i * i for i in range(200_000))  # some CPU work
    result = usage.result()
    assert {
        "usage/proc_cpu_percent",
        "usage/proc_ram_gb",
        "usage/ram_frac",
        "usage/total_cpu_frac",
    } <= set(result)
    assert all(isinstance(value, float) for value in result.values())
    assert 0.01 < result["usage/proc_ram_gb"] < 1000
    assert 0 < result["usage/ram_frac"] < 1 and 0 <= result["usage/total_cpu_frac"] <= 1
    assert result["usage/proc_cpu_percent"] >= 0
    assert set(Usage(prefix="sys").result()) == {
        key.replace("usage/", "sys/", 1) for key in result
    }
