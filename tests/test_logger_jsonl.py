"""JSONLOutput and truncate_jsonl: round trips, appends, crashes, resumes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_dreamer.logger import Logger
from keras_dreamer.logger import make_output
from keras_dreamer.logger import truncate_jsonl
from keras_dreamer.logger.outputs import JSONLOutput

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_lines(path, killed=False):
    """The file's lines; `killed`: its writer was SIGKILLed, so the last may be cut."""
    with open(path, "rb") as file:
        data = file.read()
    if killed and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    assert not data or data.endswith(b"\n"), "the file ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


def test_round_trip_groups_by_step_and_keeps_only_scalars(tmp_path):
    logger = Logger(0, [JSONLOutput(tmp_path)])
    logger.step = 10
    logger.add({"loss": 0.5, "count": np.int64(3), "flag": True, "note": "text"})
    logger.add({"hist": np.arange(3.0), "image": np.zeros((4, 4))})
    logger.step = 20
    logger.add({"loss": np.float32(0.25)}, prefix="train")
    logger.write()
    logger.step = 5  # a report buffered at an earlier step
    logger.scalar("report/loss", 1.5)
    logger.close()
    assert read_lines(tmp_path / "metrics.jsonl") == [
        {"step": 10, "loss": 0.5, "count": 3.0, "flag": 1.0},
        {"step": 20, "train/loss": 0.25},
        {"step": 5, "report/loss": 1.5},
    ]


def test_one_line_per_step_in_increasing_order(tmp_path):
    output = JSONLOutput(tmp_path, parallel=False)
    output([(3, "a", 1.0), (1, "a", 2.0), (3, "b", 3.0), (1, "a", 4.0)])
    output.close()
    assert read_lines(output.path) == [
        {"step": 1, "a": 4.0},
        {"step": 3, "a": 1.0, "b": 3.0},
    ]


def test_non_finite_values_become_null_and_lines_are_strict_json(tmp_path):
    output = JSONLOutput(tmp_path, parallel=False)
    output([(1, "nan", float("nan")), (1, "inf", np.inf), (1, "ninf", -np.inf)])
    output.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    assert text == '{"step": 1, "nan": null, "inf": null, "ninf": null}\n'
    json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name}"))


def test_two_loggers_append_to_one_file(tmp_path):
    for start in (0, 100):
        logger = Logger(start, [make_output("jsonl", tmp_path)])
        for step in range(start, start + 3):
            logger.step = step
            logger.add({"x": float(step)})
            logger.write()
        logger.close()
    lines = read_lines(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines] == [0, 1, 2, 100, 101, 102]


def test_scores_output_keeps_episode_keys_only(tmp_path):
    logger = Logger(7, [make_output("scores", tmp_path)])
    logger.add({"episode/score": 3.0, "episode/length": 200, "train/loss": 1.0})
    logger.add({"train/loss": 2.0})
    logger.close()
    assert read_lines(tmp_path / "scores.jsonl") == [
        {"step": 7, "episode/score": 3.0, "episode/length": 200.0}
    ]


def test_a_partial_last_line_is_removed_on_open(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "x": 1.0}\n{"step": 2, "x"')
    with pytest.warns(UserWarning, match="partial last line"):
        output = JSONLOutput(tmp_path, parallel=False)
    output([(3, "x", 3.0)])
    output.close()
    assert read_lines(path) == [{"step": 1, "x": 1.0}, {"step": 3, "x": 3.0}]


def test_a_file_holding_only_a_partial_line_is_emptied(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b"x" * 100_000)
    with pytest.warns(UserWarning, match="100000 bytes"):
        JSONLOutput(tmp_path).close()
    assert (tmp_path / "metrics.jsonl").read_bytes() == b""


def test_non_writable_logdir_raises_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="JSONLOutput.*not a writable directory"):
        JSONLOutput(blocker / "logs")


def test_truncate_keeps_whole_lines_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(
        b'{"step": 1, "x": 1.0}\n{"step": 2, "x": 2.0}\nnot json\n'
        b'{"step": 3, "x": 3.0}\n{"step": 2, "y": 5.0}\n{"step": 4'
    )
    os.chmod(path, 0o640)
    assert truncate_jsonl(path, max_step=2) == 3
    assert read_lines(path) == [
        {"step": 1, "x": 1.0},
        {"step": 2, "x": 2.0},
        {"step": 2, "y": 5.0},
    ]
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert truncate_jsonl(path, max_step=2) == 0
    assert truncate_jsonl(tmp_path / "missing.jsonl", 5) == 0
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]


WRITER = textwrap.dedent(
    """
    import sys
    from keras_dreamer.logger import Logger
    from keras_dreamer.logger.outputs import JSONLOutput

    logger = Logger(0, [JSONLOutput(sys.argv[1])])
    row = {f"metric/{i:04d}": float(i) for i in range(400)}  # about 8 KB a line
    step = 0
    while True:
        logger.step = step
        logger.add(row)
        logger.write()
        step += 1
    """
)


def test_a_killed_writer_leaves_whole_lines_and_reopening_removes_a_cut_one(tmp_path):
    # A SIGKILL can stop the kernel between the pages of one write, so the
    # last line of a killed writer may be cut (never one before it); the next
    # JSONLOutput on the file, as a resumed run opens, removes it.
    path = tmp_path / "metrics.jsonl"
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env)
    try:
        # Kill it mid-write once it has written a good deal (or after a
        # while on a slow machine: what is checked is that lines are whole,
        # not how fast they come).
        give_up = time.monotonic() + 60
        while not path.exists() or path.stat().st_size < 2_000_000:
            assert process.poll() is None, "the writer died on its own"
            if time.monotonic() > give_up and path.exists():
                break
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    lines = read_lines(path, killed=True)
    assert [line["step"] for line in lines] == list(range(len(lines)))
    assert all(len(line) == 401 for line in lines)
    data = path.read_bytes()
    cut = len(data) - (data.rfind(b"\n") + 1)
    if cut:
        with pytest.warns(UserWarning, match=f"partial last line \\({cut} bytes\\)"):
            JSONLOutput(tmp_path).close()
    else:
        JSONLOutput(tmp_path).close()
    assert read_lines(path) == lines
