"""Cost of `DreamerReportCallback` during `fit`, and of one open-loop report.

For each backend (a fresh process each) and preset, one process alternates
`fit` runs without and with the callback (all outputs on: terminal, jsonl,
tensorboard, wandb in offline mode), after a warm-up that compiles the train
step and the report. A synchronous timing callback, present in both
variants, gives the ratio of the median step times (the per-batch cost,
including the synchronous dispatch the callback implies). The callback's own
hooks are timed too: the per-batch hook, a log write, a report, and the fixed
costs at the start (outputs, W&B start-up, the first report) and at the end
(draining and closing outputs). From those parts it estimates the overhead of
a run of `--run-steps` steps at the defaults (a write every 100 steps, a
report every 1000 and one at the start), since short runs are dominated by
the fixed costs. Separately it times one `WorldModel.report` at size12m on a
16 x 32 batch, as the reference does (median of repeats after the compile).

    python benchmarks/callback_overhead.py [--steps 40] [--rounds 2]
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
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import numpy as np
import keras
import keras_dreamer as kd
from worker_utils import BatchEndTimes, Repeat, synthetic_batch as batch

args = json.loads(sys.argv[1])


if args["mode"] == "report":
    wm = kd.WorldModel({"image": (64, 64, 3)}, kd.Discrete(18), preset="size12m")
    data = batch(16, 32, seed=1)
    start = time.perf_counter()
    wm.report(data)
    first = time.perf_counter() - start
    times = []
    for _ in range(args["rounds"]):
        start = time.perf_counter()
        wm.report(data)
        times.append(time.perf_counter() - start)
    print("RESULT " + json.dumps({**args, "first_s": round(first, 2),
                                  "median_s": round(float(np.median(times)), 3)}))
    sys.exit()

B, T = args["batch"], args["length"]
data = batch(B, T)
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"


class TimedReportCallback(kd.DreamerReportCallback):
    # The callback, with the time spent in each of its hooks recorded.
    def __init__(self, **kwargs):
        super().__init__(tempfile.mkdtemp(), **kwargs)
        self.spent = {"begin": 0.0, "end": 0.0, "batch": [], "write": [], "report": []}

    def on_train_begin(self, logs=None):
        start = time.perf_counter()
        super().on_train_begin(logs)
        self.spent["begin"] += time.perf_counter() - start

    def on_train_batch_end(self, batch, logs=None):
        writes = self._log_schedule.last_time
        reports = self._report_schedule.last_time
        start = time.perf_counter()
        super().on_train_batch_end(batch, logs)
        seconds = time.perf_counter() - start
        if self._report_schedule.last_time != reports:
            self.spent["report"].append(seconds)
        elif self._log_schedule.last_time != writes:
            self.spent["write"].append(seconds)
        else:
            self.spent["batch"].append(seconds)

    def on_train_end(self, logs=None):
        start = time.perf_counter()
        super().on_train_end(logs)
        self.spent["end"] += time.perf_counter() - start


def make_callback(**overrides):
    return TimedReportCallback(
        outputs=("terminal", "jsonl", "tensorboard", "wandb"),
        report_data=batch(16, 32, seed=1), frames_per_step=B * T, **overrides)


wm = kd.WorldModel({"image": (64, 64, 3)}, kd.Discrete(18), preset=args["preset"])
wm.compile()
wm.fit(Repeat(data, 2), epochs=1, verbose=0, callbacks=[make_callback()], shuffle=False)
steps = {"without": [], "with": []}
spent = []
for _ in range(args["rounds"]):
    for variant in ("without", "with"):
        timer = BatchEndTimes()
        callbacks = [timer]
        if variant == "with":
            # Write and report often enough to time them within a short run.
            callbacks.append(make_callback(log_every=3, report_every=7))
        wm.fit(Repeat(data, args["steps"]), epochs=1, verbose=0, callbacks=callbacks, shuffle=False)
        steps[variant].extend(np.diff(timer.ends))
        if variant == "with":
            spent.append(callbacks[1].spent)

step0 = float(np.median(steps["without"]))
step1 = float(np.median(steps["with"]))
hook = float(np.median(np.concatenate([s["batch"] for s in spent])))
write = float(np.median(np.concatenate([s["write"] for s in spent])))
report = float(np.median(np.concatenate([s["report"] for s in spent])))
begin = float(np.median([s["begin"] for s in spent]))
end = float(np.median([s["end"] for s in spent]))
n = args["run_steps"]
extra = begin + end + n * hook + (n // 100) * write + (n // 1000) * report
print("RESULT " + json.dumps({
    **args,
    "step_ms_without": round(1000 * step0, 1), "step_ms_with": round(1000 * step1, 1),
    "step_ratio": round(step1 / step0, 4),
    "hook_ms": round(1000 * hook, 3), "write_ms": round(1000 * write, 1),
    "report_s": round(report, 3), "begin_s": round(begin, 2), "end_s": round(end, 2),
    "default_overhead": round(extra / (n * step0), 4),
}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"])
    parser.add_argument("--presets", nargs="+", default=["debug", "size1m"])
    parser.add_argument("--steps", type=int, default=40, help="steps per fit run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--run-steps", type=int, default=10_000)
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
                "run_steps": args.run_steps,
            }
            results.append(run_worker(WORKER, config))
            print(json.dumps(results[-1]), flush=True)
        if not args.skip_report:
            config = {"mode": "report", "backend": backend, "rounds": 3}
            results.append(run_worker(WORKER, config))
            print(json.dumps(results[-1]), flush=True)
    print()
    print(
        "| backend | preset | step ms without / with | step ratio | hook ms | write ms "
        f"| report s | start + end s | overhead, {args.run_steps:,}-step run at defaults |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r.get("mode") == "fit" and "error" not in r:
            print(
                f"| {r['backend']} | {r['preset']} | {r['step_ms_without']} / "
                f"{r['step_ms_with']} | {r['step_ratio']} | {r['hook_ms']} | "
                f"{r['write_ms']} | {r['report_s']} | {r['begin_s']} + {r['end_s']} | "
                f"{100 * r['default_overhead']:.2f}% |"
            )
    for r in results:
        if r.get("mode") == "report" and "error" not in r:
            print(
                f"\n{r['backend']}: one size12m report (16 x 32): {r['median_s']} s "
                f"(first call, with its compile: {r['first_s']} s)"
            )


if __name__ == "__main__":
    main()
