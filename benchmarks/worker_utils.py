"""Shared by the benchmark worker processes (they import Keras; the parents do not).

A worker runs on the backend its parent chose, with this folder on `sys.path`.
"""

import statistics
import time

import keras
import numpy as np


def synthetic_batch(batch_size, length, seed=0, size=64, actions=18):
    """A B x T batch; by default as the reference was timed (64x64x3 uint8 images,
    18 discrete actions)."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, length)
    batch = {
        "image": rng.integers(0, 256, (*shape, size, size, 3), dtype=np.uint8),
        "action": np.eye(actions, dtype=np.float32)[rng.integers(0, actions, shape)],
        "reward": rng.normal(size=shape).astype(np.float32),
        "is_first": np.zeros(shape, bool),
        "is_last": np.zeros(shape, bool),
        "is_terminal": np.zeros(shape, bool),
    }
    batch["is_first"][:, 0] = True
    return batch


def timed(run, reps):
    """Seconds of the first call of `run` and the median of `reps` more."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


class Repeat(keras.utils.PyDataset):
    """`steps` batches, all the same one."""

    def __init__(self, batch, steps):
        super().__init__()
        self.batch = batch
        self.steps = steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batch


class BatchEndTimes(keras.callbacks.Callback):
    """Wall-clock time of every batch end (a synchronous callback)."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, step, logs=None):
        self.ends.append(time.perf_counter())


def device_info():
    """The accelerator the backend computes on and its peak memory so far.

    Returns:
        dict with `device` (e.g. "cpu" or the GPU's kind) and `peak_device_gb`
        (None on a CPU or when the backend does not report it).
    """
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "cpu":
                return {"device": "cpu", "peak_device_gb": None}
            stats = device.memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
            return {
                "device": device.device_kind,
                "peak_device_gb": None if peak is None else round(peak / 2**30, 2),
            }
        if backend == "torch":
            import torch

            if not torch.cuda.is_available():
                return {"device": "cpu", "peak_device_gb": None}
            return {
                "device": torch.cuda.get_device_name(0),
                "peak_device_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            }
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return {"device": "cpu", "peak_device_gb": None}
        details = tf.config.experimental.get_device_details(gpus[0])
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        return {
            "device": details.get("device_name", "gpu"),
            "peak_device_gb": round(peak / 2**30, 2),
        }
    except Exception as error:  # reporting only: never fail a benchmark here
        return {"device": f"unknown ({type(error).__name__})", "peak_device_gb": None}
