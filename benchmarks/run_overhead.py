"""How much of the default Catch run's wall time is spent outside the update.

Runs `keras_dreamer.train.job.train` in a fresh process per backend and per
`train.agent` setting with `default.gin` (the Catch quick start), its steps
and every cadence (epochs, logs, reports, checkpoints, evaluations) divided
by `--scale`, so the mix of work is that of the full run. The worker wraps
(in its own process only) the pieces of the run with timers: the Keras train
function (the update and, inside it, the wait for the next batch), the
Collector's batches (env steps, the policy, replay adds and the sample), the
policy calls, open-loop reports, evaluations, checkpoints and logger writes.

After the run the same compiled update is timed on a fixed batch in the same
process (`--pure-steps` updates, median): that is "the update itself". Then

    outside = fit wall time - (first step + (steps - 1) * pure update)

and its share of the fit wall time is the number the goal bounds (at most
30%). The first step (tracing and compiling) counts as update time; the share
without it is printed too. A scaled-down run overweights the one-time costs
(compiling the open-loop report and each policy mode: the first call's excess
over the later calls), so the share is also extrapolated to the full 2,000-step
run: one-time costs once, the rest of the outside time times `--scale`. That
extrapolation is an upper bound, not an estimate: dividing the cadences by
`--scale` keeps the number of epochs, logs, reports, checkpoints and
evaluations that of the full run, so their cost should not be multiplied; only
the per-step costs (env steps, replay, the fit loop) should. The full run
(`--scale 1`) is the measurement; on 2026-11-29 the JAX world-model run's
bound from `--scale 50` was 34%, the full run 7%.

    python benchmarks/run_overhead.py                          # both backends, both kinds
    python benchmarks/run_overhead.py --backends jax --kinds world_model --scale 1
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
import collections, json, os, statistics, sys, tempfile, threading, time
sys.path.insert(0, os.environ["KD_ROOT"])
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import gin
import numpy as np
import keras
import keras_dreamer as kd
from keras_dreamer import checkpoint, callbacks, policy as policy_lib
from keras_dreamer.data import collect, evaluate, replay as replay_lib
from keras_dreamer.logger import logger as logger_lib
from keras_dreamer.train import job
from keras_dreamer.train.command import resolve_gin_file
from worker_utils import BatchEndTimes, Repeat

args = json.loads(sys.argv[1])
totals = collections.defaultdict(float)
counts = collections.Counter()
lock = threading.Lock()
captured = {}

calls = collections.defaultdict(list)

def timer(cls, name, key):
    original = getattr(cls, name)
    def wrapped(self, *a, **k):
        start = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            elapsed = time.perf_counter() - start
            with lock:
                totals[key] += elapsed
                counts[key] += 1
                if key in ("report", "agent_policy"):
                    # Per mode for policies: each mode compiles its own step.
                    calls[key + "/" + getattr(self, "mode", "")].append(elapsed)
    setattr(cls, name, wrapped)

timer(collect.Collector, "_next_batch", "collector_batch")
timer(collect.Collector, "_step_envs", "env_steps_incl_policy")
timer(replay_lib.Replay, "sample", "replay_sample")
timer(policy_lib.AgentPolicy, "__call__", "agent_policy")
timer(collect.RandomPolicy, "__call__", "random_policy")
timer(callbacks.DreamerReportCallback, "_report", "report")
timer(callbacks.DreamerReportCallback, "_evaluate", "eval")
timer(callbacks.DreamerReportCallback, "_add_train_metrics", "log_metrics")
timer(logger_lib.Logger, "write", "logger_write")
timer(checkpoint.Checkpointer, "save_now", "checkpoint")
from keras_dreamer import agent as agent_lib
timer(agent_lib._PolicySync, "on_train_batch_end", "policy_sync")

original_init = collect.Collector.__init__
def capturing_init(self, *a, **k):
    original_init(self, *a, **k)
    captured["collector"] = self
collect.Collector.__init__ = capturing_init

first_call = {}

def patch_make_train_function(cls):
    original = cls.make_train_function
    def make_train_function(self, force=False):
        original(self, force)
        fn = self.train_function
        if getattr(fn, "_timed", False):
            return
        captured["model"] = self
        def timed(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            logs = out[0] if keras.backend.backend() == "jax" else out
            keras.tree.map_structure(lambda x: np.asarray(x), logs)  # wait for it
            elapsed = time.perf_counter() - start
            with lock:
                if "s" not in first_call:
                    first_call["s"] = elapsed
                else:
                    totals["train_function_after_first"] += elapsed
                    counts["train_function_after_first"] += 1
            return out
        timed._timed = True
        self.train_function = timed
    cls.make_train_function = make_train_function

patch_make_train_function(kd.WorldModel)
patch_make_train_function(kd.Agent)

scale = args["scale"]
gin.parse_config_file(resolve_gin_file("default.gin"))
bindings = [
    f"train.agent = {args['agent']}",
    f"train.steps = {2000 // scale}",
    f"train.steps_per_epoch = {100 // scale}",
    f"train.log_every = {100 // scale}",
    f"train.report_every = {500 // scale}",
    f"train.save_every = {500 // scale}",
    f"train.eval_every = {500 // scale}",
    "train.verbose = 0" if args["quiet"] else "train.verbose = 'auto'",
]
gin.parse_config(bindings)
load_start = os.getloadavg()[0]
logdir = tempfile.mkdtemp()
start = time.perf_counter()
result = job.train(logdir=logdir)
total = time.perf_counter() - start
steps = result["step"]
fit_wall = result["seconds"]
timed_totals = dict(totals)
timed_counts = dict(counts)

# The update itself: the same compiled step on a fixed batch.
model = captured["model"]
bs, bl = gin.query_parameter("train.batch_size"), gin.query_parameter("train.batch_length")
batch = captured["collector"].replay.sample(bs, bl)
times = BatchEndTimes()
model.fit(Repeat(batch, args["pure_steps"] + 1), epochs=1, verbose=0, callbacks=[times],
          shuffle=False)
pure = float(np.median(np.diff(times.ends)))
update = first_call["s"] + (steps - 1) * pure
outside = fit_wall - update
# One-time costs inside the fit (compiling the report and each policy mode):
# the first call's excess over the later calls' median. They do not grow
# with the run's length; everything else outside the update does.
one_time = 0.0
for key, values in calls.items():
    if len(values) > 1:
        one_time += max(0.0, values[0] - statistics.median(values[1:]))
    elif values:
        one_time += values[0]
full_steps = 2000
full_update = first_call["s"] + (full_steps - 1) * pure
full_outside = one_time + (outside - one_time) * full_steps / steps
print("RESULT " + json.dumps({
    **args,
    "backend": keras.backend.backend(),
    "steps": steps,
    "process_train_s": round(total, 2),
    "fit_wall_s": round(fit_wall, 2),
    "first_step_s": round(first_call["s"], 2),
    "pure_update_s": round(pure, 4),
    "pure_all_s": [round(float(x), 4) for x in np.diff(times.ends)],
    "update_s": round(update, 2),
    "outside_s": round(outside, 2),
    "outside_share": round(outside / fit_wall, 3),
    "outside_share_after_first": round(outside / (fit_wall - first_call["s"]), 3),
    "one_time_s": round(one_time, 2),
    "first_calls_s": {k: round(v[0], 3) for k, v in calls.items() if v},
    "full_run_outside_share": round(full_outside / (full_outside + full_update), 3),
    "timed": {k: round(v, 3) for k, v in timed_totals.items()},
    "counts": timed_counts,
    "load": [round(load_start, 2), round(os.getloadavg()[0], 2)],
}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument(
        "--kinds", nargs="+", default=["agent", "world_model"], help="train.agent"
    )
    parser.add_argument(
        "--scale", type=int, default=10, help="divide steps and cadences by this"
    )
    parser.add_argument("--pure-steps", type=int, default=8)
    parser.add_argument("--quiet", action="store_true", help="train.verbose = 0")
    parser.add_argument("--timeout", type=int, default=3600)
    args = parser.parse_args()
    if 100 % args.scale:
        parser.error("--scale must divide 100")
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    results = []
    for kind in args.kinds:
        for backend in args.backends:
            config = {
                "backend": backend,
                "agent": kind == "agent",
                "scale": args.scale,
                "pure_steps": args.pure_steps,
                "quiet": args.quiet,
            }
            result = run_worker(WORKER, config, args.timeout)
            print(json.dumps(result), flush=True)
            results.append(result)
    print()
    print(
        "| backend | train.agent | steps | fit wall s | first step s | pure update s "
        "| outside s | outside share | (after the first step) | one-time s "
        "| at most, extrapolated to 2,000 steps | collector s "
        "| policy s | reports s | evals s | checkpoints s | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['backend']} | {r['agent']} | error |" + " |" * 14)
            continue
        t = r["timed"]
        pol = t.get("agent_policy", 0.0) + t.get("random_policy", 0.0)
        print(
            f"| {r['backend']} | {r['agent']} | {r['steps']} | {r['fit_wall_s']} "
            f"| {r['first_step_s']} | {r['pure_update_s']} | {r['outside_s']} "
            f"| {100 * r['outside_share']:.0f}% "
            f"| {100 * r['outside_share_after_first']:.0f}% "
            f"| {r['one_time_s']} | {100 * r['full_run_outside_share']:.0f}% "
            f"| {t.get('collector_batch', 0):.2f} | {pol:.2f} "
            f"| {t.get('report', 0):.2f} | {t.get('eval', 0):.2f} "
            f"| {t.get('checkpoint', 0):.2f} | {r['load'][0]}-{r['load'][1]} |"
        )


if __name__ == "__main__":
    main()
