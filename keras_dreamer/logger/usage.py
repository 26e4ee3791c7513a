"""FPS and Usage: throughput and resource metrics to log beside the losses."""

import sys
import threading
import time

_GIB = float(2**30)


class FPS:
    """Thread-safe counter of events per second (frames, updates, ...).

    `step(n)` counts events from any thread; `result()` returns the events per
    second since the previous `result()` (or since construction) and starts a
    new interval.

    Examples:
        >>> fps = FPS()
        >>> fps.step(64)
        >>> rate = fps.result()
        >>> rate > 0
        True
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0
        self._start = time.perf_counter()

    def step(self, n=1):
        """Counts `n` events."""
        with self._lock:
            self._count += n

    def result(self, reset=True):
        """Returns the events per second of the current interval.

        Args:
            reset: start a new interval.

        Returns:
            A float; 0.0 if no time has passed.
        """
        with self._lock:
            now = time.perf_counter()
            elapsed = now - self._start
            rate = self._count / elapsed if elapsed > 0 else 0.0
            if reset:
                self._count = 0
                self._start = now
        return rate


class Usage:
    """Reports the process's and the machine's resource use (psutil).

    `result()` returns, under `prefix`:

    - `proc_cpu_percent`: CPU use of this process since the previous call, in
      percent of one core (so up to 100 x cores);
    - `proc_ram_gb`: resident memory of this process, GiB (2**30 bytes);
    - `ram_frac`: fraction of the machine's memory in use;
    - `total_cpu_frac`: fraction of all cores busy since the previous call;
    - per accelerator `i`, when the backend in use exposes it:
      `device{i}_mem_gb` (in use), `device{i}_mem_peak_gb` and, on JAX,
      `device{i}_mem_frac` (in use / limit).

    Accelerator memory is read from the backend Keras uses (or, without
    Keras, from JAX or TensorFlow if one of them is imported); this never
    imports a backend nor initialises an uninitialised JAX one.

    Args:
        prefix: key prefix.

    Examples:
        >>> usage = Usage()
        >>> sorted(usage.result())[:2]
        ['usage/proc_cpu_percent', 'usage/proc_ram_gb']
    """

    def __init__(self, prefix="usage"):
        import psutil

        self._psutil = psutil
        self._prefix = prefix
        self._lock = threading.Lock()
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        self._cpu_times = psutil.cpu_times()

    def result(self):
        """Returns the usage metrics as a dict of floats (see the class doc)."""
        with self._lock:
            cpu_times = self._psutil.cpu_times()
            metrics = {
                "proc_cpu_percent": self._process.cpu_percent(None),
                "proc_ram_gb": self._process.memory_info().rss / _GIB,
                "ram_frac": self._psutil.virtual_memory().percent / 100.0,
                "total_cpu_frac": _busy_fraction(self._cpu_times, cpu_times),
            }
            self._cpu_times = cpu_times
        metrics.update(accelerator_memory())
        return {f"{self._prefix}/{key}": float(value) for key, value in metrics.items()}


def _busy_fraction(before, after):
    def idle(times):
        return times.idle + getattr(times, "iowait", 0.0)

    total = sum(after) - sum(before)
    return max(0.0, total - (idle(after) - idle(before))) / total if total > 0 else 0.0


def accelerator_memory():
    """Returns memory use of the accelerators of the backend in use.

    Returns:
        A dict like `{"device0_mem_gb": 1.5, "device0_mem_peak_gb": 2.0}`;
        empty on CPU or when no backend is in use.

    Examples:
        >>> isinstance(accelerator_memory(), dict)
        True
    """
    if "keras" not in sys.modules:  # never import a backend for a probe
        return {}
    try:
        from keras_dreamer import backend

        return backend.device_memory()
    except Exception:  # a metrics probe must never break training
        return {}
