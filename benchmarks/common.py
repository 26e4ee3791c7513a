"""Shared by the benchmark scripts: run a measurement in a fresh process."""

import json
import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_worker(code, config, timeout=3600, env=None):
    """Runs `code` in a fresh Python with `config` (JSON) as its argument.

    The worker runs on `config["backend"]` and prints one line
    `RESULT <json>`; that dict is returned, or the config with an `error`
    (the end of stderr) if there is none. `env` adds environment variables
    (e.g. `XLA_FLAGS`) to the worker's.
    """
    env = {
        **os.environ,
        "KERAS_BACKEND": config["backend"],
        "KD_ROOT": ROOT,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # What `import keras_dreamer` sets; workers import Keras first.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        **(env or {}),
    }
    return run_code(sys.executable, code, config, env, timeout)


def run_code(python, code, config, env, timeout):
    """`python -c code config_json` with exactly `env`; its RESULT dict."""
    proc = subprocess.run(
        [python, "-c", code, json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {**config, "error": proc.stderr[-2000:]}


def load_average():
    """The 1-minute load average (`os.getloadavg()[0]`), rounded."""
    return round(os.getloadavg()[0], 2)


def cpu_model():
    """The CPU model name as lscpu prints it (from /proc/cpuinfo), or ''."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def wait_or_stop(process, seconds):
    """Waits up to `seconds` for `process`, then stops it: Ctrl-C first (the
    training command saves and exits cleanly), then SIGTERM, then SIGKILL."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            process.send_signal(stop)
            try:
                process.wait(timeout=30)
                return
            except subprocess.TimeoutExpired:
                print(f"the process did not stop on {stop.name} within 30 s")
