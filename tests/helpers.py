"""Test utilities: tiny batches, a learnable toy task, backend gradients,
readers of JSONL and TensorBoard files."""

import glob
import importlib
import json
import os
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
from filelock import FileLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_IMAGE = (16, 16, 3)
SMALL_MODEL = {"preset": "debug", "mults": (4, 4)}


def random_batch(batch=2, length=6, image=SMALL_IMAGE, actions=3, seed=0, **extra):
    """A random batch in the DESIGN.md format (one image key, discrete actions)."""
    rng = np.random.default_rng(seed)
    out = {
        "image": rng.integers(0, 256, (batch, length, *image), dtype=np.uint8),
        "action": np.eye(actions, dtype=np.float32)[
            rng.integers(0, actions, (batch, length))
        ],
        "reward": rng.normal(size=(batch, length)).astype(np.float32),
        "is_first": np.zeros((batch, length), bool),
        "is_last": np.zeros((batch, length), bool),
        "is_terminal": np.zeros((batch, length), bool),
    }
    out["is_first"][:, 0] = True
    out.update(extra)
    return out


def moving_square_batch(batch=8, length=16, size=16, seed=0):
    """A learnable toy task: a 4x4 square moved left/stay/right by the action.

    Reward 1 while the square touches the right edge. The square's row is
    random per sequence and its column starts random.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, length, size, size, 3), np.uint8)
    actions = rng.integers(0, 3, (batch, length))
    rewards = np.zeros((batch, length), np.float32)
    for b in range(batch):
        row = rng.integers(0, size - 4)
        col = int(rng.integers(0, size - 4))
        for t in range(length):
            images[b, t, row : row + 4, col : col + 4] = (255, 200, 40)
            rewards[b, t] = float(col == size - 4)
            col = int(np.clip(col + actions[b, t] - 1, 0, size - 4))
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    return {
        "image": images,
        "action": np.eye(3, dtype=np.float32)[actions],
        "reward": rewards,
        "is_first": is_first,
        "is_last": np.zeros((batch, length), bool),
        "is_terminal": np.zeros((batch, length), bool),
    }


def value_and_grad(fn, variables, jit=False):
    """`(fn(), d fn() / d variables)` for Keras variables, on any backend.

    `jit=True` compiles the whole computation on JAX (much faster than
    JAX's op-by-op execution for a large `fn`); `fn` must then be traceable.
    """
    if keras.backend.backend() == "jax":
        import jax

        def pure(values):
            mapping = list(zip(variables, values))
            with keras.StatelessScope(state_mapping=mapping):
                return fn()

        grad_fn = jax.value_and_grad(pure)
        value, grads = (jax.jit(grad_fn) if jit else grad_fn)(
            [v.value for v in variables]
        )
        return value, grads
    if keras.backend.backend() == "torch":
        import torch

        value = fn()
        values = [v.value for v in variables]
        # None for a variable the value does not depend on, as on TensorFlow.
        grads = torch.autograd.grad(value, values, allow_unused=True)
        return value.detach(), list(grads)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        value = fn()
    return value, tape.gradient(value, variables)


def to_numpy(tree):
    return keras.tree.map_structure(
        lambda x: np.asarray(keras.ops.convert_to_numpy(x)), tree
    )


class Batches(keras.utils.PyDataset):
    """`steps` batches per epoch, cycling through a fixed list."""

    def __init__(self, batches, steps):
        super().__init__()
        self.batches, self.steps = batches, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batches[index % len(self.batches)]


class RecordLogs(keras.callbacks.Callback):
    """Keeps every train batch's logs."""

    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


def read_jsonl(path, killed=False):
    """The lines of a JSONL file, checking that the last one is whole.

    `killed`: the writer was SIGKILLed, which can cut its last line (the kernel
    may stop one write between pages); that line is dropped.
    """
    with open(path) as file:
        text = file.read()
    if killed and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    assert text == "" or text.endswith("\n"), "torn last line"
    return [json.loads(line) for line in text.splitlines()]


def read_events(logdir):
    """Everything in a logdir's TensorBoard event files, via tensorboard's reader."""
    from tensorboard.backend.event_processing import event_accumulator

    everything = {kind: 0 for kind in ("scalars", "images", "histograms", "tensors")}
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance=everything
    )
    accumulator.Reload()
    return accumulator


# Set in CI (`.ci/run`): a missing optional dependency fails instead of skipping.
REQUIRE_ALL = os.environ.get("KERAS_DREAMER_REQUIRE_ALL", "") not in ("", "0") or bool(
    os.environ.get("CI")
)


def require(module, reason=None):
    """Imports an optional dependency of a test.

    Locally a missing module skips the test (with `reason`); in CI
    (`KERAS_DREAMER_REQUIRE_ALL=1` or `CI` set) it fails, so a broken install
    never passes as a run of skipped tests.
    """
    if REQUIRE_ALL:
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


def once_per_session(tmp_path_factory, name, compute):
    """`compute(folder)` run once per pytest session, shared by xdist workers.

    pytest-xdist runs a module-scoped fixture again in every worker that gets
    one of the module's tests; for a fixture that trains in a subprocess for
    minutes that doubles the suite's slowest part. The first worker to ask runs
    `compute` in a folder every worker can read and stores its JSON-able result
    next to it; the others wait on a lock and read it.

    Returns:
        `(folder, result)`: the folder `compute` wrote in and what it returned.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder, stored = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if stored.is_file():
            return folder, json.loads(stored.read_text())
        folder.mkdir()
        result = compute(folder)
        stored.write_text(json.dumps(result))
    return folder, result


def run_python(code, *args, backend, env=None, timeout=300):
    """`python -c code *args` in a fresh process at the repository root.

    The process imports this checkout (`PYTHONPATH`) on Keras backend
    `backend`, with this environment plus `env`; its output is captured as
    text. The caller checks the return code.

    Returns:
        The `subprocess.CompletedProcess`.
    """
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": backend, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_wandb_run(run_dir):
    """The run id and the logged `_step`s of an offline W&B run folder.

    Reads its `run-<id>.wandb` file: W&B's record log (LevelDB's log format:
    32 KiB blocks of records, each with a 7-byte header of checksum, length
    and type; a record split over blocks comes as first, middle, last
    parts) whose records are `wandb_internal_pb2.Record` messages.

    Returns:
        `(run_id, steps)`: the id of its `run` record and the `_step` of
        each `history` record, in order.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    with open(path, "rb") as file:
        data = file.read()
    block, position, part, run_id, steps = 32768, 7, b"", None, []
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (length == 0 and kind == 0):  # a block's padding
            position += left
            continue
        part += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last part of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            part = b""
            which = record.WhichOneof("record_type")
            if which == "run":
                run_id = record.run.run_id
            elif which == "history":
                for item in record.history.item:
                    if item.key == "_step" or list(item.nested_key) == ["_step"]:
                        steps.append(int(json.loads(item.value_json)))
    return run_id, steps


def decode_video(path):
    """The frames of a GIF (Pillow) or MP4 (PyAV) file as a uint8 THWC array."""
    if str(path).endswith(".mp4"):
        av = require("av")
        with av.open(str(path)) as container:
            return np.stack(
                [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            )
    from PIL import Image

    frames = []
    with Image.open(path) as image:
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)
