"""World-model update speed: ms per update, replayed frames/s, compile, memory.

Each (backend, preset, variant) runs in a fresh process, as the reference
numbers in ../shared/reference/reference_speed.md were taken. The update is
one `model.fit` step (encoder, RSSM, decoder, heads, losses, gradients and
LaProp) on a fixed batch of B x T 64x64x3 uint8 images with 18 discrete
actions.

Each worker also measures the float32 matmul ceiling of its backend in the
same process (before and after the timed updates; the higher is used) and
prints the update's achieved GFLOP/s as a percentage of it. The FLOPs of the
update are counted once per preset from its JAX program (see `flops.py`:
matrix products and convolutions of the forward pass, the backward pass and
the optimizer); the reference-algorithm GFLOP/s counts the update as the
reference computes it (see `flops.py`).

    python benchmarks/train_step.py                     # debug, size1m, size12m
    python benchmarks/train_step.py --presets size1m --steps 5 --backends jax
    python benchmarks/train_step.py --presets size1m --rounds 2   # alternate
    python benchmarks/train_step.py --backends jax --conv-grad xla auto --rounds 2

Prints one JSON line per configuration and a markdown table at the end.
"""

import argparse
import itertools
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402
from common import load_average  # noqa: E402
from common import run_worker  # noqa: E402
from flops import count_update_flops  # noqa: E402
from flops import gflops_line  # noqa: E402
from flops import reference_flops  # noqa: E402

WORKER = r"""
import json, os, resource, sys, time
sys.path.insert(0, os.environ["KD_ROOT"])
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import numpy as np
import keras
import keras_dreamer as kd
from flops import matmul_ceiling
from worker_utils import BatchEndTimes, Repeat, device_info, synthetic_batch

args = json.loads(sys.argv[1])
B, T = args["batch"], args["length"]
batch = synthetic_batch(B, T, size=args["size"], actions=args["actions"])
load_start = os.getloadavg()[0]
ceiling_before = matmul_ceiling()

kwargs = {"dtype": args["dtype"]} if args["dtype"] else {}
kwargs.update(args["overrides"])
wm = kd.WorldModel({"image": (args["size"], args["size"], 3)},
                   kd.Discrete(args["actions"]), preset=args["preset"], **kwargs)
compile_kwargs = {}
if args["jit"] is not None:
    compile_kwargs["jit_compile"] = args["jit"]
if args["steps_per_execution"] > 1:
    compile_kwargs["steps_per_execution"] = args["steps_per_execution"]
wm.compile(**compile_kwargs)
times = BatchEndTimes()
start = time.perf_counter()
spe = args["steps_per_execution"]
wm.fit(Repeat(batch, spe * (args["steps"] + 1)), epochs=1, verbose=0, callbacks=[times],
       shuffle=False)
first = times.ends[0] - start
steps = np.diff(times.ends) / spe
median = float(np.median(steps))
peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
ceiling_after = matmul_ceiling()
print("RESULT " + json.dumps({
    **args,
    "backend": keras.backend.backend(),
    "params": wm.count_params(),
    **device_info(),
    "ceiling_gflops": max(ceiling_before["gflops"], ceiling_after["gflops"]),
    "ceiling_before_after": [ceiling_before["gflops"], ceiling_after["gflops"]],
    "load": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    "first_step_s": round(first, 2),
    "median_ms": round(1000 * median, 1),
    "all_ms": [round(1000 * s, 1) for s in steps],
    "frames_per_s": round(B * T / median, 1),
    "peak_rss_gb": round(peak_gb, 2),
}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
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
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--actions", type=int, default=18)
    parser.add_argument(
        "--mults", type=int, nargs="+", default=None, help="CNN stages (override)"
    )
    parser.add_argument(
        "--xla-flags", default=None, help="XLA_FLAGS for the workers (JAX and TF)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the whole set, alternating"
    )
    parser.add_argument(
        "--flop",
        type=float,
        default=None,
        help="FLOPs per update, if known (skips counting; one preset only)",
    )
    parser.add_argument(
        "--conv-grad",
        nargs="+",
        default=[None],
        help="KERAS_DREAMER_CONV_GRAD values to alternate (auto, xla, matmul)",
    )
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()
    jit = {"default": None, "true": True, "false": False}[args.jit]
    overrides = {"mults": args.mults} if args.mults else {}
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    flop, ref_flop = {}, {}
    for preset in args.presets:
        if args.flop:
            flop[preset] = ref_flop[preset] = args.flop
            continue
        count = count_update_flops(
            "world_model",
            preset,
            args.batch,
            args.length,
            args.size,
            args.actions,
            overrides,
            args.timeout,
        )
        flop[preset] = count.get("counted", {}).get("flops")
        ref_flop[preset] = reference_flops(count)
        print(
            f"{preset}: {flop[preset] and flop[preset] / 1e9:.1f} GFLOP per update "
            "(counted from the JAX program)"
            if flop[preset]
            else f"{preset}: {count}",
            flush=True,
        )
    results = []
    for _ in range(args.rounds):
        for preset, backend, conv_grad in itertools.product(
            args.presets, args.backends, args.conv_grad
        ):
            env = {"XLA_FLAGS": args.xla_flags} if args.xla_flags else {}
            if conv_grad:
                env["KERAS_DREAMER_CONV_GRAD"] = conv_grad
            config = {
                "backend": backend,
                "preset": preset,
                "batch": args.batch,
                "length": args.length,
                "size": args.size,
                "actions": args.actions,
                "overrides": overrides,
                "steps": args.steps,
                "dtype": args.dtype,
                "jit": jit,
                "steps_per_execution": args.steps_per_execution,
                "xla_flags": args.xla_flags,
                "conv_grad": conv_grad or "auto",
            }
            result = run_worker(WORKER, config, args.timeout, env=env or None)
            if "median_ms" in result:
                rate, pct = gflops_line(
                    flop[preset],
                    result["median_ms"] / 1000,
                    result["ceiling_gflops"],
                )
                ref_rate, ref_pct = gflops_line(
                    ref_flop[preset],
                    result["median_ms"] / 1000,
                    result["ceiling_gflops"],
                )
                result.update(
                    flop=flop[preset],
                    gflops=rate,
                    pct_ceiling=pct,
                    reference_flop=ref_flop[preset],
                    reference_gflops=ref_rate,
                    reference_pct_ceiling=ref_pct,
                )
            print(json.dumps(result), flush=True)
            results.append(result)
    print()
    print(
        "| backend | preset | conv grad | params | ms / update (median) | frames/s "
        "| GFLOP/s | % of matmul ceiling (GFLOP/s) | reference-algorithm GFLOP/s "
        "(% of ceiling) | first step s | peak RSS GiB | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(
                f"| {r['backend']} | {r['preset']} | {r['conv_grad']} | error ||||||||"
            )
            continue
        print(
            f"| {r['backend']} | {r['preset']} | {r['conv_grad']} | {r['params']:,} "
            f"| {r['median_ms']:,} "
            f"| {r['frames_per_s']:,} | {r['gflops']} "
            f"| {r['pct_ceiling']}% ({r['ceiling_gflops']}) "
            f"| {r.get('reference_gflops')} ({r.get('reference_pct_ceiling')}%) "
            f"| {r['first_step_s']} | {r['peak_rss_gb']} "
            f"| {r['load'][0]}-{r['load'][1]} |"
        )
    spread = [statistics.pstdev(r["all_ms"]) for r in results if "all_ms" in r]
    if spread:
        print(f"\n(std of step times within a run: up to {max(spread):.1f} ms)")


if __name__ == "__main__":
    main()
