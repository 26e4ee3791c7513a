"""An encoder stage (5x5 'same' convolution + 2x2 max pooling) two ways.

`plain`: the convolution, then the pooling (`kd.layers.conv.conv2d_same` and
`kd.layers.conv.max_pool2`). `s2d`: one convolution of the 2x2 space-to-depth input
and a max over each block's four outputs (`kd.layers.conv.conv2d_same_pooled_blocks`).
`kd.layers.conv.pool_conv_on_blocks` picks between them per backend and input shape
from these measurements. Each stage is timed forward + backward (the kernel
gradient, and the input gradient except for the image layer), the two paths
alternating in one process, medians; one fresh process per backend.

    python benchmarks/pool_conv.py
    python benchmarks/pool_conv.py --backends jax --configs size12m --reps 5
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402
from common import load_average  # noqa: E402
from common import run_worker  # noqa: E402

# Encoder stages: (name, frames, height = width, in channels, out channels).
# Widths follow the presets (depth = hidden / 16, mults 2, 3, 4, 4).
STAGES = {
    "catch": [  # the default Catch run: B8 x T32 frames of 32x32, size1m
        ("catch enc0 32x32 3->8", 256, 32, 3, 8),
        ("catch enc1 16x16 8->12", 256, 16, 8, 12),
        ("catch enc2 8x8 12->16", 256, 8, 12, 16),
    ],
    "size1m": [
        ("size1m enc0 64x64 3->8", 1024, 64, 3, 8),
        ("size1m enc1 32x32 8->12", 1024, 32, 8, 12),
        ("size1m enc2 16x16 12->16", 1024, 16, 12, 16),
        ("size1m enc3 8x8 16->16", 1024, 8, 16, 16),
    ],
    "size12m": [
        ("size12m enc0 64x64 3->32", 1024, 64, 3, 32),
        ("size12m enc1 32x32 32->48", 1024, 32, 32, 48),
        ("size12m enc2 16x16 48->64", 1024, 16, 48, 64),
        ("size12m enc3 8x8 64->64", 1024, 8, 64, 64),
    ],
    "size50m": [
        ("size50m enc1 32x32 64->96", 1024, 32, 64, 96),
        ("size50m enc2 16x16 96->128", 1024, 16, 96, 128),
    ],
}

WORKER = r"""
import json, os, statistics, sys, time
sys.path.insert(0, os.environ["KD_ROOT"])
import numpy as np
import keras
from keras import ops
from keras_dreamer.layers import conv as kdconv

args = json.loads(sys.argv[1])
backend = keras.backend.backend()
PATHS = {
    "plain": lambda x, k: kdconv.max_pool2(kdconv.conv2d_same(x, k)),
    "s2d": lambda x, k: ops.max(kdconv.conv2d_same_pooled_blocks(x, k), axis=3),
}
if backend == "jax":
    import jax

    def compile_step(fn, image):
        def loss(x, k, g):
            return ops.sum(fn(x, k) * g)
        return jax.jit(jax.grad(loss, argnums=(1,) if image else (0, 1)))

    def run(step, *a):
        jax.block_until_ready(step(*a))
else:
    import tensorflow as tf

    def compile_step(fn, image):
        @tf.function
        def step(x, k, g):
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                loss = tf.reduce_sum(fn(x, k) * g)
            return tape.gradient(loss, [k] if image else [x, k])
        return step

    def run(step, *a):
        [np.asarray(t) for t in step(*a)]

rng = np.random.default_rng(0)
out = {}
for name, n, hw, cin, cout in args["stages"]:
    x = ops.convert_to_tensor(rng.standard_normal((n, hw, hw, cin), dtype=np.float32))
    k = ops.convert_to_tensor(rng.standard_normal((5, 5, cin, cout), dtype=np.float32) * 0.1)
    g = ops.convert_to_tensor(rng.standard_normal((n, hw // 2, hw // 2, cout), dtype=np.float32))
    steps = {p: compile_step(fn, cin <= 4) for p, fn in PATHS.items()}
    times = {p: [] for p in PATHS}
    for p in PATHS:
        run(steps[p], x, k, g)
    for _ in range(args["reps"]):
        for p in PATHS:
            t = time.perf_counter()
            run(steps[p], x, k, g)
            times[p].append(time.perf_counter() - t)
    out[name] = {p: statistics.median(v) for p, v in times.items()}
    out[name]["chosen"] = "s2d" if kdconv.pool_conv_on_blocks(hw, hw, cin) else "plain"
print("RESULT " + json.dumps({**args, "results": out, "load": os.getloadavg()[0]}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--configs", nargs="+", default=list(STAGES))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    stages = [s for c in args.configs for s in STAGES[c]]
    print("| backend | stage | plain ms | s2d ms | plain / s2d | package uses |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends:
        config = {"backend": backend, "stages": stages, "reps": args.reps}
        result = run_worker(WORKER, config, 3600)
        if "results" not in result:
            print(json.dumps(result), flush=True)
            continue
        for name, times in result["results"].items():
            plain, s2d = 1e3 * times["plain"], 1e3 * times["s2d"]
            print(
                f"| {backend} | {name} | {plain:,.0f} | {s2d:,.0f} | "
                f"{plain / s2d:.2f} | {times['chosen']} |",
                flush=True,
            )
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
