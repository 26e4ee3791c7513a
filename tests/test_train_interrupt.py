"""SIGINT and SIGTERM stop a real `keras-dreamer train` on the current backend.

The bound is functional (a hang fails the test), not a speed: promptness is
measured in `benchmarks/interrupt.py`.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from tests.helpers import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_the_run_with_its_code(tmp_path, signum, code):
    args = [
        sys.executable,
        "-m",
        "keras_dreamer.cli",
        "train",
        "--logdir",
        str(tmp_path),
        "--gin_file",
        os.path.join("gin_configs", "debug.gin"),
        "--gin_param",
        "train.steps = 100000",
        "--gin_param",
        "make_env.max_steps = 10",
    ]
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": BACKEND}
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # Training, with a checkpoint written: the signal lands mid-run.
    deadline = time.time() + 240
    target = tmp_path / "ckpt" / "0000000004"
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    proc.send_signal(signum)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the command did not exit within 60 s of the signal")
    stderr = proc.stderr.read().decode()
    assert proc.returncode == code, stderr[-3000:]
    assert "interrupted; the last checkpoint is kept" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    for name in ("metrics.jsonl", "scores.jsonl"):
        assert (tmp_path / name).read_bytes().endswith(b"\n")
        assert read_jsonl(tmp_path / name)  # every line whole
    latest = max(int(n) for n in os.listdir(tmp_path / "ckpt") if n.isdigit())
    with open(tmp_path / "ckpt" / f"{latest:010d}" / "state.json") as file:
        assert json.load(file)["step"] == latest >= 4
