"""Shared by the benchmark scripts: run a measurement in a fresh process."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_worker(code, config, timeout=3600):
    """Runs `code` in a fresh Python with `config` (JSON) as its argument.

    The worker runs on `config["backend"]` and prints one line
    `RESULT <json>`; that dict is returned, or the config with an `error`
    (the end of stderr) if there is none.
    """
    env = {
        **os.environ,
        "KERAS_BACKEND": config["backend"],
        "KD_ROOT": ROOT,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {**config, "error": proc.stderr[-2000:]}
