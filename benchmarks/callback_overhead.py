"""Cost of `DreamerReportCallback` during `fit`, and of one open-loop report.

For each backend (a fresh process each) and preset, one process alternates
`fit` runs without and with the callback (defaults: log_every=100,
report_every=1000, outputs terminal + jsonl + tensorboard + wandb (offline)),
after a warm-up that compiles the train step and the report. It reports the
ratio of the median wall times of whole runs (everything the callback costs:
the per-batch hook, the synchronous dispatch it implies, the log write and
the report at the start of each run), and the ratio of the median step times
measured by a synchronous timing callback present in both variants (the
per-batch cost alone). Separately it times one `WorldModel.report` at
size12m on a 16 x 32 batch, as the reference does (median of repeats after
the compile).

    python benchmarks/callback_overhead.py [--steps 120] [--rounds 2]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import run_worker  # noqa: E402

WORKER = r"""
import json, os, sys, tempfile, time
sys.path.insert(0, os.environ["KD_ROOT"])
import numpy as np
import keras
import keras_dreamer as kd

args = json.loads(sys.argv[1])
B, T = args["batch"], args["length"]


def batch(b, t, seed=0):
    rng = np.random.default_rng(seed)
    out = {
        "image": rng.integers(0, 256, (b, t, 64, 64, 3), dtype=np.uint8),
        "action": np.eye(18, dtype=np.float32)[rng.integers(0, 18, (b, t))],
        "reward": rng.normal(size=(b, t)).astype(np.float32),
        "is_first": np.zeros((b, t), bool),
        "is_last": np.zeros((b, t), bool),
        "is_terminal": np.zeros((b, t), bool),
    }
    out["is_first"][:, 0] = True
    return out


data = batch(B, T)


class Repeat(keras.utils.PyDataset):
    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return data


class Times(keras.callbacks.Callback):
    # Wall time between consecutive batch ends (synchronous in both variants).

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, step, logs=None):
        self.ends.append(time.perf_counter())


if args["mode"] == "report":
    wm = kd.WorldModel({"image": (64, 64, 3)}, kd.Discrete(18), preset="size12m")
    report_batch = batch(16, 32, seed=1)
    start = time.perf_counter()
    wm.report(report_batch)
    first = time.perf_counter() - start
    times = []
    for _ in range(args["rounds"]):
        start = time.perf_counter()
        wm.report(report_batch)
        times.append(time.perf_counter() - start)
    print("RESULT " + json.dumps({**args, "backend": keras.backend.backend(),
          "first_s": round(first, 2), "median_s": round(float(np.median(times)), 3)}))
    sys.exit()

os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
wm = kd.WorldModel({"image": (64, 64, 3)}, kd.Discrete(18), preset=args["preset"])
wm.compile()


def report_callback():
    return kd.DreamerReportCallback(
        tempfile.mkdtemp(), outputs=("terminal", "jsonl", "tensorboard", "wandb"),
        report_data=batch(16, 32, seed=1), frames_per_step=B * T)


# Warm up: compile the train step and the report function.
wm.fit(Repeat(2), epochs=1, verbose=0, callbacks=[report_callback()], shuffle=False)
runs = {"without": [], "with": []}
steps = {"without": [], "with": []}
for round_ in range(args["rounds"]):
    for variant in ("without", "with"):
        extra = [report_callback()] if variant == "with" else []
        # A plain run (no timer) for the total, then a timed one for step medians.
        start = time.perf_counter()
        wm.fit(Repeat(args["steps"]), epochs=1, verbose=0, callbacks=extra, shuffle=False)
        runs[variant].append(time.perf_counter() - start)
        timer = Times()
        extra = [report_callback()] if variant == "with" else []
        wm.fit(Repeat(args["steps"]), epochs=1, verbose=0, callbacks=[timer, *extra], shuffle=False)
        steps[variant].extend(np.diff(timer.ends))

med0, med1 = float(np.median(steps["without"])), float(np.median(steps["with"]))
run0, run1 = float(np.median(runs["without"])), float(np.median(runs["with"]))
print("RESULT " + json.dumps({
    **args, "backend": keras.backend.backend(),
    "median_ms_without": round(1000 * med0, 2), "median_ms_with": round(1000 * med1, 2),
    "median_ratio": round(med1 / med0, 4),
    "run_s_without": round(run0, 2), "run_s_with": round(run1, 2),
    "run_ratio": round(run1 / run0, 4),
}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"])
    parser.add_argument("--presets", nargs="+", default=["debug", "size1m"])
    parser.add_argument("--steps", type=int, default=120, help="steps per fit run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    results = []
    for backend in args.backends:
        for preset in args.presets:
            config = {
                "mode": "fit",
                "backend": backend,
                "preset": preset,
                "steps": args.steps,
                "rounds": args.rounds,
                "batch": args.batch,
                "length": args.length,
            }
            results.append(run_worker(WORKER, config))
            print(json.dumps(results[-1]), flush=True)
        if not args.skip_report:
            config = {"mode": "report", "backend": backend, "rounds": 3}
            results.append(run_worker(WORKER, config))
            print(json.dumps(results[-1]), flush=True)
    print()
    print(
        "| backend | preset | median step ms without / with | median ratio | mean ratio |"
    )
    print("|---|---|---|---|---|")
    for r in results:
        if r.get("mode") == "fit" and "error" not in r:
            print(
                f"| {r['backend']} | {r['preset']} | {r['run_s_without']} / {r['run_s_with']} "
                f"| {r['run_ratio']} | {r['median_ms_without']} / {r['median_ms_with']} "
                f"| {r['median_ratio']} |"
            )
    for r in results:
        if r.get("mode") == "report" and "error" not in r:
            print(
                f"\n{r['backend']}: one size12m report (16 x 32): {r['median_s']} s "
                f"(first call with compile: {r['first_s']} s)"
            )


if __name__ == "__main__":
    main()
