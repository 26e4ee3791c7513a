"""Output construction by name, custom sinks, media files, the async base."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import keras_dreamer as kd
from keras_dreamer.logger import Logger
from keras_dreamer.logger import make_output
from keras_dreamer.logger import make_outputs
from keras_dreamer.logger import media
from keras_dreamer.logger import outputs

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_package_is_reachable_from_the_top_level():
    assert kd.logger.outputs.TerminalOutput is outputs.TerminalOutput
    assert kd.logger.make_output is outputs.make
    assert set(outputs.NAMES) == {
        "jsonl",
        "media",
        "mlflow",
        "scores",
        "tensorboard",
        "terminal",
        "wandb",
    }


@pytest.mark.parametrize(
    "name, cls",
    [
        ("terminal", outputs.TerminalOutput),
        ("jsonl", outputs.JSONLOutput),
        ("scores", outputs.JSONLOutput),
        ("tensorboard", outputs.TensorBoardOutput),
        ("media", outputs.MediaOutput),
        (" JSONL ", outputs.JSONLOutput),
    ],
)
def test_make_builds_outputs_by_name(tmp_path, name, cls):
    output = make_output(name, tmp_path)
    assert type(output) is cls
    output.close()


def test_make_passes_outputs_through_and_wraps_callables():
    terminal = outputs.TerminalOutput()
    assert make_output(terminal) is terminal
    wrapped = make_output(print)
    assert isinstance(wrapped, outputs.CallableOutput) and wrapped.fn is print


def test_unknown_names_list_the_known_ones():
    with pytest.raises(
        ValueError, match="'csv'.*'jsonl', 'media', 'mlflow', 'scores'.*'wandb'"
    ):
        make_output("csv")
    with pytest.raises(TypeError, match="callable"):
        make_output(42)


@pytest.mark.parametrize("name", ["jsonl", "scores", "tensorboard", "media"])
def test_file_outputs_need_a_logdir(name):
    with pytest.raises(ValueError, match=f"'{name}'.*logdir"):
        make_output(name)


def test_make_outputs_adds_media_files_when_there_is_a_logdir(tmp_path):
    built = make_outputs(["terminal", "jsonl"], tmp_path)
    assert [type(o).__name__ for o in built] == [
        "TerminalOutput",
        "JSONLOutput",
        "MediaOutput",
    ]
    assert len(make_outputs(["media"], tmp_path)) == 1
    assert len(make_outputs(["jsonl"], tmp_path, media=False)) == 1
    assert [type(o) for o in make_outputs(["terminal"])] == [outputs.TerminalOutput]


def test_make_outputs_closes_what_it_built_when_one_fails(tmp_path):
    closed = []

    class Sink:
        def __call__(self, summaries):
            pass

        def close(self):
            closed.append(True)

    with pytest.raises(ValueError, match="Unknown output 'nope'"):
        make_outputs([Sink(), "nope"], tmp_path)
    assert closed == [True]


class Sink:
    """A custom sink object: __call__, flush and close."""

    def __init__(self):
        self.rows, self.flushes, self.closes = [], 0, 0
        self.threads = set()

    def __call__(self, summaries):
        self.threads.add(threading.current_thread().name)
        self.rows.extend(summaries)

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closes += 1


@pytest.mark.parametrize("parallel", [False, True])
def test_callable_output_filters_and_forwards_flush_and_close(parallel):
    sink = Sink()
    output = outputs.CallableOutput(sink, pattern="^train/", parallel=parallel)
    logger = Logger(2, [output])
    logger.add({"train/loss": 1.0, "fps": 5.0})
    logger.write()
    logger.add({"fps": 6.0})  # nothing matches: the sink is not called
    logger.write()
    output.flush()
    logger.close()
    logger.close()
    assert sink.rows == [(2, "train/loss", 1.0)]
    assert (sink.flushes, sink.closes) == (1, 1)
    on_caller = sink.threads == {threading.current_thread().name}
    assert on_caller is not parallel


def test_a_closed_async_output_refuses_writes():
    output = outputs.CallableOutput(Sink(), parallel=True)
    output.close()
    with pytest.raises(RuntimeError, match="closed"):
        output([(0, "x", 1.0)])


def test_media_output_saves_each_video_as_a_gif(tmp_path):
    video = np.random.default_rng(0).random((9, 6, 10, 3))
    video[4:] = 0.0
    logger = Logger(1000, make_outputs([], tmp_path))
    logger.add(
        {"openloop/image": video, "loss": 1.0, "frame": video[0]}, prefix="report"
    )
    logger.close()
    assert os.listdir(tmp_path / "media") == ["report_openloop_image_1000.gif"]
    gif = Image.open(tmp_path / "media" / "report_openloop_image_1000.gif")
    assert gif.n_frames == 9 and gif.size == (10, 6)


def test_a_video_is_encoded_once_for_every_output(tmp_path, monkeypatch):
    calls = []
    encode = media.encode_gif
    monkeypatch.setattr(media, "encode_gif", lambda *a: calls.append(1) or encode(*a))
    logger = Logger(1, make_outputs(["tensorboard", "media"], tmp_path))
    logger.video("v", np.zeros((3, 4, 4, 3), np.uint8))
    logger.close()
    assert len(calls) == 1


def test_importing_the_logger_imports_no_backend():
    script = (
        "import sys, keras_dreamer.logger as L\n"
        "L.Usage().result(); L.make_outputs(['terminal'])\n"
        "print(sorted(m for m in ('keras', 'jax', 'tensorflow', 'tensorboard', 'wandb')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["jsonl", "scores", "tensorboard", "media", "wandb"])
def test_a_non_writable_logdir_raises_when_the_output_is_built(tmp_path, name):
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(OSError, match="not a writable directory"):
        make_output(name, tmp_path / "file" / "run")


def test_the_logger_wraps_plain_callables():
    def my_sink(summaries):
        pass

    logger = Logger(0, [my_sink, outputs.TerminalOutput()])
    assert [output.name for output in logger.outputs] == [
        "CallableOutput(my_sink)",
        "TerminalOutput",
    ]
    assert logger.outputs[0].fn is my_sink
