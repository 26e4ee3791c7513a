"""Shared by the benchmark worker processes (they import Keras; the parents do not).

A worker runs on the backend its parent chose, with this folder on `sys.path`.
"""

import time

import keras
import numpy as np


def synthetic_batch(batch_size, length, seed=0):
    """A B x T batch as the reference was timed: 64x64x3 uint8, 18 discrete actions."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, length)
    batch = {
        "image": rng.integers(0, 256, (*shape, 64, 64, 3), dtype=np.uint8),
        "action": np.eye(18, dtype=np.float32)[rng.integers(0, 18, shape)],
        "reward": rng.normal(size=shape).astype(np.float32),
        "is_first": np.zeros(shape, bool),
        "is_last": np.zeros(shape, bool),
        "is_terminal": np.zeros(shape, bool),
    }
    batch["is_first"][:, 0] = True
    return batch


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
