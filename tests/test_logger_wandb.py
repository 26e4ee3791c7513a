"""WandBOutput: a real W&B run in offline mode, and the disabled mode."""

import glob
import os

import numpy as np
import pytest
from PIL import Image

from keras_dreamer.logger import Logger
from keras_dreamer.logger import OutputWarning
from keras_dreamer.logger import make_output
from keras_dreamer.logger.outputs import WandBOutput
from keras_dreamer.logger.video import mp4_available
from tests.helpers import decode_video
from tests.helpers import require

pytestmark = pytest.mark.backend_independent

require("wandb")


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One offline run (W&B start-up is slow), logged to and finished."""
    logdir = tmp_path_factory.mktemp("wandb_logdir")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    try:
        output = make_output("wandb", logdir)
    finally:
        mp.undo()
    video = np.zeros((11, 8, 12, 3), np.uint8)
    video[:6] = 200  # two runs of repeated frames
    logger = Logger(0, [output])
    for step in (1, 2, 3):
        logger.step = step
        logger.add({"loss": step * 0.5, "hist": np.arange(10.0)}, prefix="train")
        logger.write()
    logger.add(
        {"image": np.full((6, 5, 3), 0.5), "video": video, "note": "hi"}, "report"
    )
    with pytest.warns(OutputWarning, match="dropped step 1"):
        logger.write()
        logger.step = 1  # W&B steps must increase
        logger.scalar("late", 1.0)
        logger.write()
        output.flush()  # the warning comes from the worker thread
    logger.step = 4  # W&B commits step 3 when step 4 arrives
    logger.scalar("final", 2.0)
    logger.write()
    output.flush()
    summary = dict(output.run.summary)
    logger.close()
    return output, logdir, video, summary


def test_the_run_lives_offline_under_the_logdir(offline_run):
    output, logdir, _, summary = offline_run
    (run_dir,) = glob.glob(os.path.join(logdir, "wandb", "offline-run-*"))
    assert glob.glob(os.path.join(run_dir, "run-*.wandb"))
    assert output.run.name == os.path.basename(logdir)
    assert summary["train/loss"] == 1.5 and "late" not in summary


def test_media_files_are_in_the_run_directory(offline_run):
    _, logdir, video, _ = offline_run
    files = os.path.join(logdir, "wandb", "offline-run-*", "files", "media")
    suffix = ".mp4" if mp4_available() else ".gif"  # MP4 with the video extra
    (path,) = glob.glob(os.path.join(files, "videos", "report", "video_*" + suffix))
    assert len(decode_video(path)) == len(video)
    (png,) = glob.glob(os.path.join(files, "images", "report", "image_*.png"))
    assert Image.open(png).size == (5, 6)


def test_disabled_mode_logs_without_building_media(tmp_path):
    output = WandBOutput(mode="disabled", dir=tmp_path)
    logger = Logger(5, [output], strict=True)
    logger.video("v", np.zeros((3, 4, 4, 3)))
    logger.close()
    assert output._tmpdir is None
    assert not os.path.exists(tmp_path / "wandb" / "latest-run")
