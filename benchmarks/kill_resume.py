"""Kill-and-resume stress test of `keras-dreamer train` (not a pytest test).

Starts a debug run, kills it with SIGKILL at a random moment, restarts it in
the same logdir, and repeats until it has been killed `--kills` times. After
every kill it reads `metrics.jsonl` and `scores.jsonl` and counts:

- torn lines: a line that is not whole JSON ending in a newline;
- duplicate steps: a step that appears twice in one file, or steps that do
  not increase;
- failed resumes: a restart that exits on its own with an error.

All three must be 0. Run from the repository root:

    KERAS_BACKEND=jax python benchmarks/kill_resume.py --kills 50
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("metrics.jsonl", "scores.jsonl")


def check(path):
    """(lines, torn, duplicates) of one JSONL file."""
    if not os.path.exists(path):
        return 0, 0, 0
    with open(path, "rb") as file:
        raw = file.read().split(b"\n")
    torn = 0 if raw[-1] == b"" else 1  # text after the last newline
    steps = []
    for line in raw[:-1]:
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            torn += 1
    duplicates = sum(1 for a, b in zip(steps, steps[1:]) if b <= a)
    return len(steps), torn, duplicates


def _stat(path):
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--min_secs", type=float, default=1.0)
    parser.add_argument("--max_secs", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    logdir = args.logdir or tempfile.mkdtemp(prefix="kill_resume_")
    command = [
        sys.executable,
        "-m",
        "keras_dreamer.cli",
        "train",
        "--logdir",
        logdir,
        "--gin_file",
        os.path.join(REPO, "gin_configs", "debug.gin"),
        "--gin_param",
        "train.steps = 1000000",
        "--gin_param",
        "train.log_every = 1",
        "--gin_param",
        "train.save_every = 2",
        "--gin_param",
        "make_env.max_steps = 10",
    ]
    env = {**os.environ, "PYTHONPATH": REPO}
    env.setdefault("KERAS_BACKEND", "jax")
    kills = torn = duplicates = failed = 0
    started = time.time()
    while kills < args.kills:
        # A quarter of the kills come at a random time after the start (most
        # before the first line); the others after a random number (1-6) of
        # writes to metrics.jsonl by this process, plus a random delay, so
        # they fall before, during and after checkpoints.
        early = rng.random() < 0.25
        delay = rng.uniform(args.min_secs, args.max_secs)
        writes_wanted = rng.randint(1, 6)
        metrics = os.path.join(logdir, FILES[0])
        with open(os.path.join(logdir, "stderr.txt"), "wb") as stderr:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
            start = time.time()
            seen, writes = _stat(metrics), 0
            while process.poll() is None:
                now = time.time()
                if early and now - start > delay:
                    break
                if now - start > args.timeout:
                    break
                current = _stat(metrics)
                if current != seen:
                    seen, writes = current, writes + 1
                    if not early and writes >= writes_wanted:
                        time.sleep(rng.uniform(0.0, 1.5))
                        break
                time.sleep(0.02)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
            else:
                failed += 1
                with open(os.path.join(logdir, "stderr.txt"), "rb") as file:
                    tail = file.read()[-2000:].decode(errors="replace")
                print(f"restart exited by itself (rc {process.returncode}):\n{tail}")
        delay = time.time() - start
        counts = {name: check(os.path.join(logdir, name)) for name in FILES}
        now_torn = sum(c[1] for c in counts.values())
        now_dup = sum(c[2] for c in counts.values())
        torn = max(torn, now_torn)
        duplicates = max(duplicates, now_dup)
        print(
            f"kill {kills:3d} after {delay:5.1f}s ({'early' if early else writes}): "
            + ", ".join(f"{n} {c[0]} lines" for n, c in counts.items())
            + f", torn {now_torn}, duplicates {now_dup}",
            flush=True,
        )
    lines = {name: check(os.path.join(logdir, name))[0] for name in FILES}
    result = {
        "kills": kills,
        "torn_lines": torn,
        "duplicate_steps": duplicates,
        "failed_resumes": failed,
        "lines": lines,
        "backend": env["KERAS_BACKEND"],
        "cpu": cpu_model(),
        "wall_s": round(time.time() - started, 1),
        "logdir": logdir,
    }
    print(json.dumps(result))
    return 0 if torn == duplicates == failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
