"""JAX updates with and without keras-dreamer's XLA compiler options.

`auto`: the options `keras_dreamer.backend.compiler_options()` chooses (on a
CPU, convolutions with XLA's own kernels instead of YNNPACK fusions); `off`:
XLA's defaults (`KERAS_DREAMER_XLA_OPTIONS=off`). Both models are built and
compiled in one process, then their updates alternate, so the machine's
drift between runs does not enter the ratio; medians per model kind and
preset. B16 x T64 frames of 64x64x3, 18 actions, float32.

    python benchmarks/xla_options.py
    python benchmarks/xla_options.py --presets size12m --kinds world_model --reps 5
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402
from common import load_average  # noqa: E402
from common import run_worker  # noqa: E402

WORKER = r"""
import json, os, statistics, sys, time
sys.path.insert(0, os.environ["KD_ROOT"])
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import keras
import keras_dreamer as kd
from worker_utils import Repeat, synthetic_batch

args = json.loads(sys.argv[1])
batch = synthetic_batch(args["batch"], args["length"])
models, first = {}, {}
for mode in ("auto", "off"):
    os.environ["KERAS_DREAMER_XLA_OPTIONS"] = mode  # read when fit compiles
    keras.utils.set_random_seed(0)
    cls = kd.Agent if args["kind"] == "agent" else kd.WorldModel
    model = cls({"image": (64, 64, 3)}, kd.Discrete(18), preset=args["preset"])
    model.compile()
    start = time.perf_counter()
    model.fit(Repeat(batch, 1), epochs=1, verbose=0, shuffle=False)
    first[mode] = time.perf_counter() - start
    models[mode] = model
times = {mode: [] for mode in models}
for _ in range(args["reps"]):
    for mode, model in models.items():
        start = time.perf_counter()
        model.fit(Repeat(batch, 1), epochs=1, verbose=0, shuffle=False)
        times[mode].append(time.perf_counter() - start)
print("RESULT " + json.dumps({
    **args,
    "options": kd.xla_options.jax_compiler_options(),
    "median_s": {mode: statistics.median(t) for mode, t in times.items()},
    "first_s": first,
    "load": os.getloadavg()[0],
}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["size1m", "size12m"])
    parser.add_argument("--kinds", nargs="+", default=["world_model", "agent"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    print("| update | preset | off s | auto s | off / auto | first step off / auto s |")
    print("|---|---|---|---|---|---|")
    for kind in args.kinds:
        for preset in args.presets:
            config = {
                "backend": "jax",
                "kind": kind,
                "preset": preset,
                "reps": args.reps,
                "batch": args.batch,
                "length": args.length,
            }
            result = run_worker(WORKER, config, 3600)
            if "median_s" not in result:
                print(json.dumps(result), flush=True)
                continue
            off, auto = result["median_s"]["off"], result["median_s"]["auto"]
            first = result["first_s"]
            print(
                f"| {kind} | {preset} | {off:.2f} | {auto:.2f} | {off / auto:.2f} | "
                f"{first['off']:.1f} / {first['auto']:.1f} |",
                flush=True,
            )
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
