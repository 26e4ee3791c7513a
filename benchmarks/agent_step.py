"""Agent update speed next to the world-model update, and the policy's latency.

For each preset and backend (JAX, TensorFlow and PyTorch by default), fresh
processes alternate: the world-model-only
update (`kd.WorldModel.fit`) and the full agent update (`kd.Agent.fit`: world
model, imagination of H = 15 steps from all B * T posterior states, actor,
critic, replay value loss, one LaProp step), on the same fixed batch of
B x T 64x64x3 uint8 images with 18 discrete actions. The agent worker also
times `agent.policy` (one compiled acting step, noise drawn on the host) for
1 and 16 envs. Medians of the timed steps after the first (compile) step.
Each update's achieved GFLOP/s is printed as a percentage of the float32
matmul ceiling measured in the same worker (see `flops.py`; the FLOPs are
counted once per preset and kind from the JAX program of the train step;
"ref." is the reference algorithm's FLOPs per second of ours, see `flops.py`).

    python benchmarks/agent_step.py                       # size1m, size12m
    python benchmarks/agent_step.py --presets size1m --backends tensorflow
    # the default Catch agent, the three backends alternating three times:
    python benchmarks/agent_step.py --presets size1m --mults 2 3 4 --size 32 \
        --actions 3 --batch 8 --length 32 --rounds 3

Prints one JSON line per run and markdown tables at the end.
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
size, actions = args["size"], args["actions"]
batch = synthetic_batch(B, T, size=size, actions=actions)
load_start = os.getloadavg()[0]
ceiling = matmul_ceiling()["gflops"]
cls = kd.Agent if args["kind"] == "agent" else kd.WorldModel
model = cls({"image": (size, size, 3)}, kd.Discrete(actions), preset=args["preset"],
            **args["overrides"])
model.compile()
times = BatchEndTimes()
start = time.perf_counter()
model.fit(Repeat(batch, args["steps"] + 1), epochs=1, verbose=0, callbacks=[times],
          shuffle=False)
steps = np.diff(times.ends)
result = {
    **args,
    "backend": keras.backend.backend(),
    "params": model.count_params(),
    "first_step_s": round(times.ends[0] - start, 2),
    "median_s": round(float(np.median(steps)), 3),
    "all_s": [round(float(s), 3) for s in steps],
    "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    **device_info(),
    "ceiling_gflops": max(ceiling, matmul_ceiling()["gflops"]),
    "load": [round(load_start, 2), round(os.getloadavg()[0], 2)],
}
if args["kind"] == "agent":
    for envs in (1, 16):
        policy = model.make_policy("train", seed=0)
        obs = {"image": np.resize(batch["image"][0], (envs, size, size, 3)),
               "is_first": np.zeros(envs, bool)}
        policy(obs)  # compile
        lat = []
        for _ in range(args["policy_calls"]):
            t0 = time.perf_counter()
            policy(obs)
            lat.append(time.perf_counter() - t0)
        result[f"policy_ms_{envs}"] = round(1000 * float(np.median(lat)), 2)
print("RESULT " + json.dumps(result))
"""


def median_run(runs):
    """The run with the median update time (of those that finished), its
    `median_s` replaced by the median over the runs; {} if none finished."""
    done = sorted((r for r in runs if "median_s" in r), key=lambda r: r["median_s"])
    if not done:
        return {}
    return {
        **done[len(done) // 2],
        "median_s": statistics.median(r["median_s"] for r in done),
        "rounds": len(done),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--presets", nargs="+", default=["size1m", "size12m"])
    parser.add_argument("--steps", type=int, default=5, help="timed updates")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--policy-calls", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--actions", type=int, default=18)
    parser.add_argument(
        "--mults", type=int, nargs="+", default=None, help="CNN stages (override)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the whole set, alternating"
    )
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument(
        "--no-flops",
        dest="count_flops",
        action="store_false",
        help="skip counting FLOPs (one JAX process per preset and kind)",
    )
    args = parser.parse_args()
    overrides = {"mults": args.mults} if args.mults else {}
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    flop, ref_flop = {}, {}
    for preset in args.presets if args.count_flops else []:
        for kind in ("world_model", "agent"):
            count = count_update_flops(
                kind,
                preset,
                args.batch,
                args.length,
                args.size,
                args.actions,
                overrides,
            )
            flop[preset, kind] = count.get("counted", {}).get("flops")
            ref_flop[preset, kind] = reference_flops(count)
            print(f"{preset} {kind}: {count.get('counted', count)}", flush=True)
    results = []
    rounds = itertools.product(range(args.rounds), args.presets, args.backends)
    for _, preset, backend in rounds:
        for kind in ("world_model", "agent"):
            config = {
                "backend": backend,
                "preset": preset,
                "kind": kind,
                "batch": args.batch,
                "length": args.length,
                "steps": args.steps,
                "policy_calls": args.policy_calls,
                "size": args.size,
                "actions": args.actions,
                "overrides": overrides,
            }
            result = run_worker(WORKER, config, args.timeout)
            if "median_s" in result:
                rate, pct = gflops_line(
                    flop.get((preset, kind)),
                    result["median_s"],
                    result["ceiling_gflops"],
                )
                _, ref_pct = gflops_line(
                    ref_flop.get((preset, kind)),
                    result["median_s"],
                    result["ceiling_gflops"],
                )
                result.update(
                    flop=flop.get((preset, kind)),
                    gflops=rate,
                    pct_ceiling=pct,
                    reference_pct_ceiling=ref_pct,
                )
            print(json.dumps(result), flush=True)
            results.append(result)
    print()
    print(
        "| backend | preset | world model s/update | agent s/update | ratio "
        "| agent compile s | agent peak RSS GiB | policy ms, 1 env | 16 envs "
        "| world model GFLOP/s (% ceiling) | agent GFLOP/s (% ceiling) "
        "| device | agent peak device GiB | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    pairs = {}
    for r in results:
        pairs.setdefault((r["backend"], r["preset"]), {}).setdefault(
            r["kind"], []
        ).append(r)
    for (backend, preset), pair in pairs.items():
        wm, agent = (median_run(pair.get(k, [])) for k in ("world_model", "agent"))
        if "median_s" not in wm or "median_s" not in agent:
            print(f"| {backend} | {preset} | error |" + " |" * 11)
            continue
        print(
            f"| {backend} | {preset} | {wm['median_s']} | {agent['median_s']} "
            f"| {agent['median_s'] / wm['median_s']:.2f} | {agent['first_step_s']} "
            f"| {agent['peak_rss_gb']} | {agent['policy_ms_1']} "
            f"| {agent['policy_ms_16']} "
            f"| {wm['gflops']} ({wm['pct_ceiling']}%; ref. "
            f"{wm['reference_pct_ceiling']}%) "
            f"| {agent['gflops']} ({agent['pct_ceiling']}%; ref. "
            f"{agent['reference_pct_ceiling']}%) "
            f"| {agent['device']} | {agent['peak_device_gb']} "
            f"| {wm['load'][0]}-{agent['load'][1]} |"
        )


if __name__ == "__main__":
    main()
