"""Does the training command learn CartPole? A recorded regression check.

Runs `keras-dreamer train --gin_file cartpole.gin` (this checkout, in a fresh
process) for a wall-clock budget, stops it with Ctrl-C (SIGINT: the command
saves and exits cleanly) if it has not finished, and reports the score curve
from the logdir: per log window the update step, the env steps, the mean
episode score, and the mean of the last 10 windows. Gymnasium calls
CartPole-v1 solved at 475 (episodes end at 500).

    python benchmarks/cartpole_learning.py --minutes 60 --logdir runs/cartpole
    python benchmarks/cartpole_learning.py --minutes 2 --logdir /tmp/smoke \\
        --gin_param "train.log_every = 10" --out smoke.jsonl

`--require SCORE` exits with status 1 when the best mean of 10 log windows
stays below SCORE (for a regression run with a budget known to reach it).
Record results with the CPU model in benchmarks/RESULTS.md.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import wait_or_stop  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLVED = 475.0


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def run(args):
    """Train for at most `args.minutes`; returns (exit code, seconds)."""
    command = [
        sys.executable,
        "-m",
        "keras_dreamer.train",
        "--logdir",
        args.logdir,
        "--gin_file",
        "cartpole.gin",
        "--gin_param",
        "train.verbose = 'lines'",
    ]
    for binding in args.gin_param:
        command += ["--gin_param", binding]
    env = {**os.environ, "PYTHONPATH": REPO}
    start = time.time()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=REPO,
        # A shell's background job ignores SIGINT, and so would the command.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_or_stop(process, args.minutes * 60)
    return process.returncode, time.time() - start


def curve(logdir):
    """One row per log window with finished episodes."""
    env_steps = {
        line["step"]: line["env/steps"]
        for line in read_jsonl(os.path.join(logdir, "metrics.jsonl"))
        if "env/steps" in line
    }
    rows, recent = [], []
    for line in read_jsonl(os.path.join(logdir, "scores.jsonl")):
        if "episode/score" not in line:
            continue
        recent = (recent + [line["episode/score"]])[-10:]
        rows.append(
            {
                "step": line["step"],
                "env_steps": env_steps.get(line["step"]),
                "score": line["episode/score"],
                "length": line.get("episode/length"),
                "mean10": sum(recent) / len(recent),
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--gin_param", action="append", default=[])
    parser.add_argument("--out", help="also write the curve as JSON lines here")
    parser.add_argument("--require", type=float, default=None)
    args = parser.parse_args(argv)

    code, seconds = run(args)
    rows = curve(args.logdir)
    print(f"\ntrain exit code {code}, {seconds / 60:.1f} min wall")
    print(f"{'step':>6} {'env steps':>10} {'score':>8} {'mean of 10':>10}")
    for row in rows:
        env_steps = "-" if row["env_steps"] is None else f"{row['env_steps']:.0f}"
        print(
            f"{row['step']:>6} {env_steps:>10} {row['score']:>8.1f} "
            f"{row['mean10']:>10.1f}"
        )
    best = max((row["mean10"] for row in rows), default=float("nan"))
    print(f"best mean of 10 windows: {best:.1f} (solved: {SOLVED:.0f})")
    if args.out:
        with open(args.out, "w") as file:
            for row in rows:
                file.write(json.dumps(row) + "\n")
    if args.require is not None and not best >= args.require:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
