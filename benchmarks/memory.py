"""Peak memory of one agent update per preset, and what the replay costs.

For each preset, a fresh process builds `kd.Agent` on 64x64x3 uint8 images
with 18 discrete actions, runs two updates (`fit`: the first compiles) on one
B x T batch, and reports the process's resident memory (RSS) after the
imports, after building the model, and its peak (`ru_maxrss`) by the end.
On a CPU the model, the optimizer state and the activations of the update
live in that RSS; on a GPU they live in device memory and scale the same way.
The bytes a replay step takes (`kd.data.memory.step_bytes`) are printed
next to it.

    python benchmarks/memory.py                         # debug, size1m, size12m
    python benchmarks/memory.py --presets size1m --batch 32 --length 64
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
import json, os, resource, sys
sys.path.insert(0, os.environ["KD_ROOT"])
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import psutil
import keras
import keras_dreamer as kd
from worker_utils import Repeat, synthetic_batch

args = json.loads(sys.argv[1])
gib = 2**30
process = psutil.Process()
imported = process.memory_info().rss / gib
batch = synthetic_batch(args["batch"], args["length"])
agent = kd.Agent({"image": (64, 64, 3)}, kd.Discrete(18), preset=args["preset"])
agent.compile()
built = process.memory_info().rss / gib
agent.fit(Repeat(batch, 2), epochs=1, verbose=0, shuffle=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
result = {
    **args,
    "backend": keras.backend.backend(),
    "params": agent.count_params(),
    "rss_imported_gib": round(imported, 2),
    "rss_built_gib": round(built, 2),
    "peak_rss_gib": round(peak, 2),
    "update_gib": round(peak - imported, 2),
}
print("RESULT " + json.dumps(result))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--presets", nargs="+", default=["debug", "size1m", "size12m"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from keras_dreamer.data import memory
    from keras_dreamer.spaces import Box
    from keras_dreamer.spaces import Discrete

    per_step = memory.step_bytes(
        {"image": Box((64, 64, 3), 0, 255, "uint8")}, Discrete(18)
    )
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    print(f"replay: {per_step} bytes per step (64x64x3 image, 18 actions)")
    results = []
    for preset in args.presets:
        config = {
            "backend": args.backend,
            "preset": preset,
            "batch": args.batch,
            "length": args.length,
        }
        result = run_worker(WORKER, config, args.timeout)
        print(json.dumps(result), flush=True)
        results.append(result)
    print()
    print(
        "| backend | preset | params | B x T | RSS after imports GiB "
        "| after build GiB | peak GiB | peak - imports GiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "peak_rss_gib" not in r:
            print(f"| {r['backend']} | {r['preset']} | error |" + " |" * 5)
            continue
        print(
            f"| {r['backend']} | {r['preset']} | {r['params']:,} "
            f"| {r['batch']} x {r['length']} | {r['rss_imported_gib']} "
            f"| {r['rss_built_gib']} | {r['peak_rss_gib']} | {r['update_gib']} |"
        )


if __name__ == "__main__":
    main()
