"""Which log lines a restarted `keras-dreamer train` keeps (defect: duplicate
step-0 lines after a kill before the first checkpoint)."""

import json

import pytest

from keras_dreamer.train.job import drop_unsaved_lines

pytestmark = pytest.mark.backend_independent


def write(path, steps):
    with open(path, "w") as file:
        for step in steps:
            file.write(json.dumps({"step": step, "x": 1.0}) + "\n")
        file.write('{"step": 99, "x"')  # a torn last line


def steps(path):
    with open(path) as file:
        return [json.loads(line)["step"] for line in file]


def test_a_run_without_checkpoint_starts_its_logs_over(tmp_path):
    for name in ("metrics.jsonl", "scores.jsonl"):
        write(tmp_path / name, [0, 1, 2])
    drop_unsaved_lines(str(tmp_path), None)
    for name in ("metrics.jsonl", "scores.jsonl"):
        assert steps(tmp_path / name) == []


def test_a_resumed_run_keeps_the_lines_up_to_its_checkpoint(tmp_path):
    write(tmp_path / "metrics.jsonl", [0, 4, 8, 12])
    drop_unsaved_lines(str(tmp_path), 8)
    assert steps(tmp_path / "metrics.jsonl") == [0, 4, 8]
    assert not (tmp_path / "scores.jsonl").exists()
