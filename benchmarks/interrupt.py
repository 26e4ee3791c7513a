"""How promptly `keras-dreamer train` stops on SIGINT (Ctrl-C) or SIGTERM.

Starts the debug config (a run far longer than the test), sends the signal
at a random moment (while importing, compiling, collecting, training,
writing metrics or checkpoints), and measures the seconds from the signal to
the exit. A try passes when the command exits within `--limit` seconds with
the signal's documented code (130 for SIGINT, 143 for SIGTERM; or killed by
the signal itself, which a shell reports with the same code, when it lands
before the command has installed its handlers, while Python imports it), every line of
`metrics.jsonl` and `scores.jsonl` is a whole JSON object, and the latest
checkpoint (when one was written) reads back. SIGINT goes to the whole
process group, as a terminal's Ctrl-C does; SIGTERM to the command alone, as
`kill` does. A command that has not exited after `--give_up` seconds is
killed and counted as a failure.

    python benchmarks/interrupt.py --tries 50 --backend tensorflow --signal both
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
CODES = {"INT": 130, "TERM": 143}


def command(logdir, backend):
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
        "train.steps = 100000",
        "--gin_param",
        "make_env.max_steps = 10",
    ]


def whole_lines(logdir):
    """Whether every line of the JSONL files is a whole JSON object."""
    for name in ("metrics.jsonl", "scores.jsonl"):
        path = os.path.join(logdir, name)
        if not os.path.exists(path):
            continue
        with open(path, "rb") as file:
            raw = file.read()
        if raw and not raw.endswith(b"\n"):
            return False
        for text in raw.splitlines():
            try:
                json.loads(text)["step"]
            except (ValueError, KeyError, TypeError):
                return False
    return True


def checkpoint_readable(logdir):
    """Whether the latest complete checkpoint (if any) reads back."""
    root = os.path.join(logdir, "ckpt")
    names = (
        sorted((n for n in os.listdir(root) if n.isdigit()), key=int)
        if (os.path.isdir(root))
        else []
    )
    complete = [n for n in names if os.path.exists(os.path.join(root, n, "state.json"))]
    if not complete:
        return True
    path = os.path.join(root, complete[-1])
    try:
        with open(os.path.join(path, "state.json")) as file:
            json.load(file)["step"]
        return os.path.getsize(os.path.join(path, "model.weights.h5")) > 0
    except (OSError, ValueError, KeyError):
        return False


def one_try(cmd, env, delay, signame, give_up):
    """Runs the command, signals it after `delay` s; `(code, seconds)`."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=delay)
        return proc.returncode, None, proc.stderr.read().decode()
    except subprocess.TimeoutExpired:
        pass
    signum = getattr(signal, "SIG" + signame)
    sent = time.perf_counter()
    if signame == "INT":
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    try:
        proc.wait(timeout=give_up)
        seconds = time.perf_counter() - sent
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        seconds = None
    return proc.returncode, seconds, proc.stderr.read().decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=50)
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument(
        "--signal",
        choices=[*sorted(CODES), "both"],
        default="both",
        help="both: SIGINT and SIGTERM in turn",
    )
    parser.add_argument("--max_delay", type=float, default=30.0)
    parser.add_argument("--limit", type=float, default=10.0)
    parser.add_argument("--give_up", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "PYTHONPATH": REPO}
    times, failures = [], []
    counts = {name: 0 for name in CODES}
    started = time.time()
    for i in range(args.tries):
        delay = rng.uniform(0.5, args.max_delay)
        signame = args.signal if args.signal != "both" else sorted(CODES)[i % 2]
        counts[signame] += 1
        logdir = tempfile.mkdtemp(prefix="interrupt_")
        code, seconds, stderr = one_try(
            command(logdir, args.backend), env, delay, signame, args.give_up
        )
        whole, readable = whole_lines(logdir), checkpoint_readable(logdir)
        ok = (
            seconds is not None
            and seconds <= args.limit
            and code in (CODES[signame], -getattr(signal, "SIG" + signame))
            and whole
            and readable
        )
        if seconds is not None:
            times.append(seconds)
        shown = "hung" if seconds is None else f"{seconds:.2f}s"
        print(
            f"try {i + 1}/{args.tries}: SIG{signame} after {delay:.1f}s, exit {code} in "
            f"{shown}, whole lines {whole}, checkpoint {readable}: "
            f"{'ok' if ok else 'FAIL'}",
            flush=True,
        )
        if not ok:
            failures.append(
                {
                    "try": i + 1,
                    "signal": signame,
                    "delay": round(delay, 2),
                    "code": code,
                }
            )
            print(stderr[-1500:], file=sys.stderr)
    times.sort()
    result = {
        "backend": args.backend,
        "signals": {"SIG" + name: count for name, count in counts.items() if count},
        "tries": args.tries,
        "ok": args.tries - len(failures),
        "limit_s": args.limit,
        "hung": args.tries - len(times),
        "exit_s": {
            "min": round(times[0], 2) if times else None,
            "median": round(times[len(times) // 2], 2) if times else None,
            "p90": round(times[int(len(times) * 0.9)], 2) if times else None,
            "max": round(times[-1], 2) if times else None,
        },
        "histogram_s": _histogram(times),
        "failures": failures,
        "seconds": round(time.time() - started, 1),
        "cpu": cpu_model() or platform.processor(),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as file:
            json.dump(result, file, indent=1)
    return 0 if not failures else 1


def _histogram(times):
    """Counts of exit times in the bins <1, 1-2, 2-5, 5-10, 10-60 s."""
    edges = [(0, 1), (1, 2), (2, 5), (5, 10), (10, float("inf"))]
    return {
        f"{lo}-{hi if hi != float('inf') else 'inf'}": sum(lo <= t < hi for t in times)
        for lo, hi in edges
    }


if __name__ == "__main__":
    raise SystemExit(main())
