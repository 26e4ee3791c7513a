"""Data-parallel scaling: world-model or agent updates/s on 1 and 2 (virtual) devices.

Every measurement runs in a fresh process (the device count of JAX is fixed
when it starts), at the same global batch:

- `1 device`: one CPU device, no distribution (the plain path);
- `1 device, DataParallel`: one device through `keras.distribution`
  (`kd.distribute.scope(1)`): the cost of the distributed code path alone;
- `2 devices, DataParallel`: two virtual CPU devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=2`), the batch split in
  halves, gradients all-reduced.

On a machine with few cores, two virtual CPU devices share the same cores,
so they cannot be faster than one; the overhead columns show what the
distributed path costs per update against the plain single-device update.
On real accelerators each device adds its own compute.

With `benchmarks/env_scaling.py` present (parallel env processes), its
`measure_env_scaling()` runs after, with its defaults.

    python benchmarks/scaling.py                  # JAX, 3 repeats
    python benchmarks/scaling.py --repeats 5 --batch 16 --length 32 --image 32
    python benchmarks/scaling.py --model agent --no_envs

Prints one JSON line per process and a markdown table at the end.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import run_worker  # noqa: E402

WORKER = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["KD_ROOT"])
import jax
import keras
import numpy as np
import keras_dreamer as kd
from keras_dreamer import distribute

args = json.loads(sys.argv[1])
B, T, S = args["batch"], args["length"], args["image"]
rng = np.random.default_rng(0)
batch = {
    "image": rng.integers(0, 256, (B, T, S, S, 3), dtype=np.uint8),
    "action": np.eye(3, dtype=np.float32)[rng.integers(0, 3, (B, T))],
    "reward": rng.normal(size=(B, T)).astype(np.float32),
    "is_first": np.zeros((B, T), bool),
    "is_last": np.zeros((B, T), bool),
    "is_terminal": np.zeros((B, T), bool),
}
batch["is_first"][:, 0] = True


class Repeat(keras.utils.PyDataset):
    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return batch


class Ends(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, step, logs=None):
        self.ends.append(time.perf_counter())


mults = tuple(args["mults"])
with distribute.scope(args["distribution"]) as dist:
    keras.utils.set_random_seed(0)
    kind = kd.Agent if args["model"] == "agent" else kd.WorldModel
    model = kind({"image": (S, S, 3)}, kd.Discrete(3),
                 preset=args["preset"], mults=mults, seed=0)
    model.compile()
    ends = Ends()
    start = time.perf_counter()
    model.fit(Repeat(args["steps"] + 1), epochs=1, verbose=0, callbacks=[ends],
              shuffle=False)
steps = np.diff(ends.ends)
median = float(np.median(steps))
print("RESULT " + json.dumps({
    **args,
    "jax_devices": jax.local_device_count(),
    "mesh_devices": distribute.device_count(dist),
    "first_step_s": round(ends.ends[0] - start, 2),
    "median_ms": round(1000 * median, 2),
    "updates_per_s": round(1 / median, 3),
}))
"""

SETUPS = (
    ("1 device", 1, None),
    ("1 device, DataParallel", 1, 1),
    ("2 devices, DataParallel", 2, 2),
)


def run(config, devices, timeout):
    """One setup in a fresh JAX process with `devices` virtual CPU devices."""
    flags = f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    return run_worker(
        WORKER, {**config, "backend": "jax"}, timeout, env={"XLA_FLAGS": flags}
    )


def measure_device_scaling(
    model="world_model",
    preset="debug",
    batch=16,
    length=32,
    image=32,
    mults=(2, 4),
    steps=10,
    repeats=3,
    timeout=1800,
):
    """Median updates/s per setup (see the module docstring), over `repeats`
    fresh processes each; the setups take turns so that load drifts hit all."""
    runs = {name: [] for name, _, _ in SETUPS}
    for repeat in range(repeats):
        for name, devices, distribution in SETUPS:
            config = {
                "setup": name,
                "repeat": repeat,
                "distribution": distribution,
                "model": model,
                "preset": preset,
                "batch": batch,
                "length": length,
                "image": image,
                "mults": list(mults),
                "steps": steps,
            }
            result = run(config, devices, timeout)
            print(json.dumps(result), flush=True)
            runs[name].append(result)
    summary = []
    base = None
    for name, _, _ in SETUPS:
        good = [r for r in runs[name] if "error" not in r]
        if not good:
            summary.append({"setup": name, "error": runs[name][-1]["error"]})
            continue
        ms = statistics.median(r["median_ms"] for r in good)
        if base is None:
            base = ms
        summary.append(
            {
                "setup": name,
                "devices": good[0]["mesh_devices"],
                "median_ms": ms,
                "all_ms": [r["median_ms"] for r in good],
                "updates_per_s": round(1000 / ms, 3),
                "overhead": round(ms / base - 1, 4),
            }
        )
    return summary


def env_scaling():
    """Runs `benchmarks/env_scaling.py`'s `measure_env_scaling()` if present."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "env_scaling.py")
    if not os.path.exists(path):
        print("benchmarks/env_scaling.py is absent: env scaling skipped.")
        return None
    spec = importlib.util.spec_from_file_location("env_scaling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure_env_scaling()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", choices=["world_model", "agent"], default="world_model"
    )
    parser.add_argument("--preset", default="debug")
    parser.add_argument("--batch", type=int, default=16, help="global batch B")
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--mults", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=10, help="timed updates")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no_envs", action="store_true", help="skip env scaling")
    args = parser.parse_args()
    summary = measure_device_scaling(
        args.model,
        args.preset,
        args.batch,
        args.length,
        args.image,
        args.mults,
        args.steps,
        args.repeats,
    )
    print()
    print(
        f"{args.model} `{args.preset}`, {args.image}x{args.image} images, global "
        f"batch {args.batch} x {args.length}, median of {args.repeats} processes "
        f"x {args.steps} updates:"
    )
    print()
    print("| setup | devices | ms / update | updates/s | vs 1 device | runs (ms) |")
    print("|---|---|---|---|---|---|")
    for row in summary:
        if "error" in row:
            print(f"| {row['setup']} | error | | | | |")
            continue
        print(
            f"| {row['setup']} | {row['devices']} | {row['median_ms']:.1f} "
            f"| {row['updates_per_s']:.2f} | {100 * row['overhead']:+.1f}% "
            f"| {', '.join(f'{m:.1f}' for m in row['all_ms'])} |"
        )
    if not args.no_envs:
        result = env_scaling()
        if result is not None:
            print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
