"""World-model update speed: ms per update, replayed frames/s, compile, memory.

Each (backend, preset, variant) runs in a fresh process, as the reference
numbers in ../shared/reference/reference_speed.md were taken. The update is
one `model.fit` step (encoder, RSSM, decoder, heads, losses, gradients and
LaProp) on a fixed batch of B x T 64x64x3 uint8 images with 18 discrete
actions.

    python benchmarks/train_step.py                     # debug, size1m, size12m
    python benchmarks/train_step.py --presets size1m --steps 5 --backends jax

Prints one JSON line per configuration and a markdown table at the end.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import run_worker  # noqa: E402

WORKER = r"""
import json, os, resource, sys, time
sys.path.insert(0, os.environ["KD_ROOT"])
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import numpy as np
import keras
import keras_dreamer as kd
from worker_utils import BatchEndTimes, Repeat, synthetic_batch

args = json.loads(sys.argv[1])
B, T = args["batch"], args["length"]
batch = synthetic_batch(B, T)

kwargs = {"dtype": args["dtype"]} if args["dtype"] else {}
wm = kd.WorldModel({"image": (64, 64, 3)}, kd.Discrete(18), preset=args["preset"], **kwargs)
compile_kwargs = {}
if args["jit"] is not None:
    compile_kwargs["jit_compile"] = args["jit"]
wm.compile(**compile_kwargs)
times = BatchEndTimes()
start = time.perf_counter()
wm.fit(Repeat(batch, args["steps"] + 1), epochs=1, verbose=0, callbacks=[times], shuffle=False)
first = times.ends[0] - start
steps = np.diff(times.ends)
median = float(np.median(steps))
peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print("RESULT " + json.dumps({
    **args,
    "backend": keras.backend.backend(),
    "params": wm.count_params(),
    "first_step_s": round(first, 2),
    "median_ms": round(1000 * median, 1),
    "all_ms": [round(1000 * s, 1) for s in steps],
    "frames_per_s": round(B * T / median, 1),
    "peak_rss_gb": round(peak_gb, 2),
}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"])
    parser.add_argument("--presets", nargs="+", default=["debug", "size1m", "size12m"])
    parser.add_argument("--steps", type=int, default=5, help="timed updates")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--dtype", default=None, help="e.g. mixed_bfloat16")
    parser.add_argument(
        "--jit",
        choices=["default", "true", "false"],
        default="default",
        help="compile(jit_compile=...) (TensorFlow's default is XLA off on CPU)",
    )
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()
    jit = {"default": None, "true": True, "false": False}[args.jit]
    results = []
    for preset in args.presets:
        for backend in args.backends:
            config = {
                "backend": backend,
                "preset": preset,
                "batch": args.batch,
                "length": args.length,
                "steps": args.steps,
                "dtype": args.dtype,
                "jit": jit,
            }
            result = run_worker(WORKER, config, args.timeout)
            print(json.dumps(result), flush=True)
            results.append(result)
    print()
    print(
        "| backend | preset | params | ms / update (median) | frames/s | first step s | peak RSS GiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['backend']} | {r['preset']} | error | | | | |")
            continue
        print(
            f"| {r['backend']} | {r['preset']} | {r['params']:,} | {r['median_ms']:,} "
            f"| {r['frames_per_s']:,} | {r['first_step_s']} | {r['peak_rss_gb']} |"
        )
    spread = [statistics.pstdev(r["all_ms"]) for r in results if "all_ms" in r]
    if spread:
        print(f"\n(std of step times within a run: up to {max(spread):.1f} ms)")


if __name__ == "__main__":
    main()
