"""TensorBoardOutput: event files read back with tensorboard's own reader."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from keras_dreamer.logger import Logger
from keras_dreamer.logger import make_output
from keras_dreamer.logger.outputs import TensorBoardOutput
from tests.helpers import read_events

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One logdir written with every kind of summary, and what was logged."""
    logdir = tmp_path_factory.mktemp("tb")
    rng = np.random.default_rng(0)
    values = {
        "image_rgb": rng.integers(0, 256, (12, 20, 3), dtype=np.uint8),
        "image_gray": rng.random((9, 7)),
        "video": rng.integers(0, 256, (14, 16, 24, 3), dtype=np.uint8),
        "histogram": rng.normal(size=1000),
    }
    values["video"][5:10] = 0  # repeated frames must survive
    logger = Logger(0, [make_output("tensorboard", logdir)])
    for step in (0, 50, 100):
        logger.step = step
        logger.add({"loss": step / 7, "score": np.float32(step + 0.5)}, prefix="train")
        logger.write()
    logger.step = 100
    logger.add(values, prefix="report")
    logger.text("report/summary", "hello **TensorBoard**")
    logger.close()
    return read_events(logdir), values


def test_scalars_have_exact_values_and_steps(logged):
    accumulator, _ = logged
    events = accumulator.Scalars("train/loss")
    assert [event.step for event in events] == [0, 50, 100]
    np.testing.assert_allclose(
        [event.value for event in events], np.float32([0, 50 / 7, 100 / 7])
    )
    assert [event.value for event in accumulator.Scalars("train/score")] == [
        0.5,
        50.5,
        100.5,
    ]


def decode(event):
    return Image.open(io.BytesIO(event.encoded_image_string))


def test_images_decode_to_the_logged_shape(logged):
    accumulator, values = logged
    (rgb,) = accumulator.Images("report/image_rgb")
    assert (rgb.step, rgb.height, rgb.width) == (100, 12, 20)
    np.testing.assert_array_equal(np.asarray(decode(rgb)), values["image_rgb"])
    (gray,) = accumulator.Images("report/image_gray")
    assert np.asarray(decode(gray)).shape == (9, 7)


def test_videos_decode_as_gifs_with_every_frame(logged):
    accumulator, values = logged
    (event,) = accumulator.Images("report/video")
    gif = decode(event)
    assert gif.format == "GIF" and gif.size == (24, 16)
    assert gif.n_frames == len(values["video"]) == 14


def test_histograms_and_text(logged):
    accumulator, values = logged
    (event,) = accumulator.Histograms("report/histogram")
    histogram = event.histogram_value
    assert event.step == 100 and histogram.num == 1000
    assert histogram.min == values["histogram"].min()
    assert sum(histogram.bucket) == 1000
    (text,) = accumulator.Tensors("report/summary")
    assert text.tensor_proto.string_val == [b"hello **TensorBoard**"]
    metadata = accumulator.SummaryMetadata("report/summary")
    assert metadata.plugin_data.plugin_name == "text"


def test_non_finite_histogram_values_are_skipped(tmp_path):
    output = TensorBoardOutput(tmp_path, parallel=False)
    output(
        [
            (1, "h", np.array([1.0, np.nan, np.inf, 3.0])),
            (1, "empty", np.array([np.nan])),
        ]
    )
    output.close()
    accumulator = read_events(tmp_path)
    assert accumulator.Histograms("h")[0].histogram_value.num == 2
    assert "empty" not in accumulator.Tags()["histograms"]


def test_non_writable_logdir_raises_at_construction(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="TensorBoardOutput"):
        TensorBoardOutput(tmp_path / "file" / "logs")


def test_writing_never_imports_tensorflow(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from keras_dreamer.logger import Logger, make_output

        logger = Logger(3, [make_output("tensorboard", sys.argv[1])])
        logger.add({"x": 1.0, "h": np.ones(5), "i": np.zeros((4, 4)),
                    "v": np.zeros((2, 4, 4, 3)), "t": "text"})
        logger.close()
        print(sorted(m for m in ("tensorflow", "jax", "keras") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
    assert len([f for f in os.listdir(tmp_path) if f.startswith("events.out")]) == 1
