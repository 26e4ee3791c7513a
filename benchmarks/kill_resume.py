"""Kill-and-resume stress test of `keras-dreamer train`.

Runs the debug config in one logdir, kills it with SIGKILL at random moments
(while importing, compiling, training, writing metrics, saving checkpoints),
restarts it in the same logdir, and repeats until `--kills` kills have
happened; then lets the last run finish. After every restart it checks the
logdir:

- torn lines: a line of `metrics.jsonl` / `scores.jsonl` that is not a whole
  JSON object. A SIGKILL can cut the last line of the killed run (Linux may
  stop a write between pages), so right after a kill a partial *last* line is
  allowed; the restart must remove it, else the next line appended joins it
  into a broken line mid-file, which counts. After the final, uninterrupted
  run any partial line counts;
- duplicate steps: a step that appears twice for the same kind of line
  (train, report, episode), or steps out of increasing order;
- failed resumes: a restart that exits non-zero, or a final run that does not
  reach the last step.

All three must be 0. Usage:

    python benchmarks/kill_resume.py --kills 50 --backend jax --out result.json
"""

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kinds(line):
    """The kinds of a metrics line: train, report or other keys' groups."""
    found = set()
    for key in line:
        if key == "step":
            continue
        found.add(key.split("/")[0])
    return found


def check(logdir, killed):
    torn, duplicates = 0, 0
    for name in ("metrics.jsonl", "scores.jsonl"):
        path = os.path.join(logdir, name)
        if not os.path.exists(path):
            continue
        with open(path, "rb") as file:
            raw = file.read()
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines = lines[:-1]
        elif lines:
            torn += 0 if killed else 1  # a last line without its newline
            lines = lines[:-1]
        last = {}
        for text in lines:
            try:
                line = json.loads(text)
                step = int(line["step"])
            except (ValueError, KeyError, TypeError):
                torn += 1
                continue
            for kind in kinds(line):
                if kind in last and step <= last[kind]:
                    duplicates += 1
                last[kind] = step
    return torn, duplicates


def command(logdir, steps, backend):
    return [
        sys.executable,
        "-m",
        "keras_dreamer.cli",
        "train",
        "--backend",
        backend,
        "--logdir",
        logdir,
        "--gin_file",
        "debug.gin",
        "--gin_param",
        f"train.steps = {steps}",
        "--gin_param",
        "make_env.max_steps = 10",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--max_delay", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    logdir = tempfile.mkdtemp(prefix="kill_resume_")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = command(logdir, args.steps, args.backend)
    kills = restarts = failed = torn = duplicates = 0
    started = time.time()
    while kills < args.kills:
        delay = rng.uniform(0.5, args.max_delay)
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        restarts += 1
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if proc.returncode not in (0, -signal.SIGKILL):
            failed += 1
            print(proc.stderr.read().decode()[-2000:], file=sys.stderr)
        proc.stderr.close()
        t, d = check(logdir, killed=proc.returncode == -signal.SIGKILL)
        torn, duplicates = max(torn, t), max(duplicates, d)
        if proc.returncode == 0:  # finished before the kill: start over
            print(f"run finished before its kill (restart {restarts})", flush=True)
        print(
            f"kill {kills}/{args.kills} after {delay:.1f}s: torn {t}, duplicates {d}",
            flush=True,
        )
    final = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    restarts += 1
    if final.returncode != 0 or f"now at step {args.steps}" not in final.stdout:
        failed += 1
        print(final.stderr[-2000:], file=sys.stderr)
    t, d = check(logdir, killed=False)
    torn, duplicates = max(torn, t), max(duplicates, d)
    result = {
        "kills": kills,
        "restarts": restarts,
        "torn_lines": torn,
        "duplicate_steps": duplicates,
        "failed_resumes": failed,
        "backend": args.backend,
        "steps": args.steps,
        "seconds": round(time.time() - started, 1),
        "cpu": cpu_model() or platform.processor(),
        "python": platform.python_version(),
        "logdir": logdir,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as file:
            json.dump(result, file, indent=1)
    return 0 if not (torn or duplicates or failed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
