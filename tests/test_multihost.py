"""A multi-process run of `keras-dreamer train`: two processes on 127.0.0.1.

The debug config trains the agent in two processes (one CPU device each, so
the global batch of 2 is split one sequence per process), first to step 4
(`KERAS_DISTRIBUTION_*` environment variables), then resumed to step 8 (the
command's `--job_addresses`, `--num_processes`, `--process_id` flags).
Process 0 writes one `metrics.jsonl` with each step once, the checkpoints
and the media; process 1 is given a logdir of its own and never creates it.
On TensorFlow the command refuses a multi-process run with a clear error.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import pytest

from tests.helpers import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()
DEBUG = os.path.join("gin_configs", "debug.gin")
SETTINGS = ("--gin_file", DEBUG, "--gin_param", "make_env.max_steps = 10")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra):
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": BACKEND}
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    env.update(extra)
    return env


def command(logdir, steps, *extra):
    return [
        sys.executable,
        "-m",
        "keras_dreamer.cli",
        "train",
        "--logdir",
        str(logdir),
        *SETTINGS,
        "--gin_param",
        f"train.steps = {steps}",
        *extra,
    ]


def run_one(logdir, steps, *extra):
    """Runs one process of the command to the end; returns its result."""
    return subprocess.run(
        command(logdir, steps, *extra),
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_two(logdirs, steps, flags):
    """Runs both processes to the end; returns their (code, stdout, stderr)."""
    address = f"127.0.0.1:{free_port()}"
    procs = []
    for index, logdir in enumerate(logdirs):
        if flags:
            extra = (
                "--job_addresses",
                address,
                "--num_processes",
                "2",
                "--process_id",
                str(index),
            )
            env = environment()
        else:
            extra = ()
            env = environment(
                KERAS_DISTRIBUTION_JOB_ADDRESSES=address,
                KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                KERAS_DISTRIBUTION_PROCESS_ID=str(index),
            )
        procs.append(
            subprocess.Popen(
                command(logdir, steps, *extra),
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=900)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.mark.skipif(BACKEND != "jax", reason="multi-process training needs JAX")
def test_two_processes_train_checkpoint_and_resume(tmp_path):
    logdir = tmp_path / "run"
    other = tmp_path / "process1_never_writes"
    first = run_two([logdir, other], 4, flags=False)
    for index, (code, out, err) in enumerate(first):
        assert code == 0, f"process {index}:\n{out[-2000:]}\n{err[-4000:]}"
    assert "Process 0 of 2: trained 4 steps (now at step 4)" in first[0][1]
    assert "Process 1 of 2: trained 4 steps" in first[1][1]
    assert "process 0 writes the logs" in first[1][1]
    assert not other.exists()
    lines = read_jsonl(logdir / "metrics.jsonl")
    assert [line["step"] for line in lines] == [0, 2, 4]
    with open(logdir / "ckpt" / "0000000004" / "state.json") as file:
        state = json.load(file)
    assert state["num_processes"] == 2 and state["step"] == 4

    second = run_two([logdir, other], 8, flags=True)
    for index, (code, out, err) in enumerate(second):
        assert code == 0, f"process {index}:\n{out[-2000:]}\n{err[-4000:]}"
    assert "Process 0 of 2: trained 4 steps (now at step 8)" in second[0][1]
    assert "Process 1 of 2: trained 4 steps (now at step 8)" in second[1][1]
    assert not other.exists()
    lines = read_jsonl(logdir / "metrics.jsonl")
    assert [line["step"] for line in lines] == [0, 2, 4, 6, 8]
    assert all("train/loss" in line for line in lines[1:])
    evals = [line["step"] for line in lines if "eval/episode/score" in line]
    assert evals == [4, 8]
    checkpoints = sorted(n for n in os.listdir(logdir / "ckpt") if n.isdigit())
    assert checkpoints == ["0000000004", "0000000008"]
    media = os.listdir(logdir / "media")
    assert "report_openloop_image_8.gif" in media
    assert len(media) == len(set(media))


def test_resuming_with_another_process_count_is_refused(tmp_path):
    logdir = tmp_path / "run"
    os.makedirs(logdir / "ckpt" / "0000000004")
    with open(logdir / "ckpt" / "0000000004" / "state.json", "w") as file:
        json.dump({"step": 4, "num_processes": 2}, file)
    result = run_one(logdir, 8)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "written by a run of 2 process(es)" in result.stderr


@pytest.mark.skipif(BACKEND == "jax", reason="the error path of the other backends")
def test_other_backends_refuse_a_multi_process_run(tmp_path):
    logdir = tmp_path / "run"
    result = run_one(logdir, 4, "--num_processes", "2", "--process_id", "0")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "need the JAX backend" in result.stderr
    assert not os.path.exists(logdir / "metrics.jsonl")
