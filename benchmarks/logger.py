"""Benchmarks of keras_dreamer.logger: how long logging holds up training.

Run from the repository root:

    python benchmarks/logger.py [--repeats 7]

Measures, as medians over repeats:

1. `add` + `write` of 100 scalars: the caller's time per call with no
   outputs, with JSONL + TensorBoard writing on their threads (one write per
   10 ms, as a training loop would), and back to back (each write then waits
   for the previous one, so this is the outputs' throughput).
2. One report with a 42x196x408x3 uint8 video (plus 100 scalars) to
   TensorBoard + JSONL + W&B (offline) + media files: how long `add` and
   `write()` block the caller, how long `close()` takes to drain everything,
   and, for comparison, how long encoding the GIF alone takes.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_dreamer.logger import Logger  # noqa: E402
from keras_dreamer.logger import make_outputs  # noqa: E402
from keras_dreamer.logger import media  # noqa: E402

SCALARS = {f"train/metric_{i:03d}": float(i) for i in range(100)}
VIDEO_SHAPE = (42, 196, 408, 3)


def median_ms(samples):
    return 1000 * statistics.median(samples)


def time_scalar_writes(outputs, steps, pause):
    """Returns the caller's seconds per add+write, one sample per step."""
    logger = Logger(0, outputs)
    samples = []
    for step in range(steps):
        logger.step = step
        start = time.perf_counter()
        logger.add(SCALARS)
        logger.write()
        samples.append(time.perf_counter() - start)
        if pause:
            time.sleep(pause)
    logger.close()
    return samples


def bench_scalars(repeats):
    rows = []
    for label, specs, pause in [
        ("no outputs", None, 0.0),
        ("JSONL + TensorBoard, one write per 10 ms", ["jsonl", "tensorboard"], 0.01),
        ("JSONL + TensorBoard, back to back", ["jsonl", "tensorboard"], 0.0),
    ]:
        samples = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as logdir:
                outputs = [] if specs is None else make_outputs(specs, logdir)
                samples += time_scalar_writes(outputs, steps=200, pause=pause)
        rows.append((label, 1000 * median_ms(samples)))
    return rows


def bench_video(repeats):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, VIDEO_SHAPE, dtype=np.uint8)
    video[-10:] = 0  # the black tail of an open-loop report
    encode = []
    for _ in range(repeats):
        start = time.perf_counter()
        media.encode_gif(video, fps=15)
        encode.append(time.perf_counter() - start)
    add, write, close, second_write = [], [], [], []
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as logdir:
            outputs = make_outputs(["tensorboard", "jsonl", "wandb"], logdir)
            logger = Logger(1000, outputs)
            start = time.perf_counter()
            logger.add(SCALARS)
            logger.add({"report/openloop/image": video})
            add.append(time.perf_counter() - start)
            start = time.perf_counter()
            logger.write()
            write.append(time.perf_counter() - start)
            # The next write waits for the video writes still in flight.
            logger.step = 1001
            logger.add(SCALARS)
            start = time.perf_counter()
            logger.write()
            second_write.append(time.perf_counter() - start)
            start = time.perf_counter()
            logger.close()
            close.append(time.perf_counter() - start)
            assert os.listdir(os.path.join(logdir, "media")) == [
                "report_openloop_image_1000.gif"
            ]
    return [
        ("`add` (100 scalars + the video, copied)", median_ms(add)),
        ("`write()` (returns while the outputs encode and write)", median_ms(write)),
        (
            "next `write()` right after (waits for the video write)",
            median_ms(second_write),
        ),
        ("`close()` (drains TB, JSONL, media, W&B finish)", median_ms(close)),
        ("GIF encoding alone (`media.encode_gif`)", median_ms(encode)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    python, cpus = platform.python_version(), os.cpu_count()
    print(f"python {python}, {cpus} CPUs, {platform.machine()}")
    print(f"\n### add + write of 100 scalars (median of {args.repeats} x 200 calls)\n")
    print("| outputs | caller time per add+write |\n|---|---|")
    for label, microseconds in bench_scalars(args.repeats):
        print(f"| {label} | {microseconds:.0f} us |")
    shape = "x".join(map(str, VIDEO_SHAPE))
    print(f"\n### one {shape} uint8 video to TB + JSONL + W&B offline + media ")
    print(f"(median of {args.repeats})\n")
    print("| step | time |\n|---|---|")
    for label, milliseconds in bench_video(args.repeats):
        print(f"| {label} | {milliseconds:.1f} ms |")


if __name__ == "__main__":
    main()
