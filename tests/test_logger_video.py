"""MP4 videos with PyAV (the `video` extra), and the GIF fallback."""

import glob
import os

import numpy as np
import pytest

from keras_dreamer.logger import video
from keras_dreamer.logger.outputs import WandBOutput
from tests.helpers import decode_video
from tests.helpers import require

pytestmark = pytest.mark.backend_independent


def clip(frames=7, height=15, width=17):
    """Frames of one grey level each, rising; odd sizes on purpose."""
    levels = np.linspace(20, 230, frames).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3))


def test_an_mp4_decodes_back_to_every_frame(tmp_path):
    require("av", reason="MP4 needs the video extra")
    frames = clip()
    path = tmp_path / "clip.mp4"
    path.write_bytes(video.encode_mp4(frames, fps=10))
    decoded = decode_video(path)
    # H.264 needs even sizes: one copied row and column more.
    assert decoded.shape == (7, 16, 18, 3)
    np.testing.assert_allclose(
        decoded.mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)), atol=4
    )
    assert video.video_bytes(frames)[1] == ".mp4"
    assert video.resolve_format("auto") == "mp4"


def test_gif_is_the_fallback_and_the_switch(tmp_path):
    frames = clip()
    data, suffix = video.video_bytes(frames, video_format="gif")
    path = tmp_path / ("clip" + suffix)
    path.write_bytes(data)
    assert suffix == ".gif" and decode_video(path).shape == (7, 15, 17, 3)
    with pytest.raises(ValueError, match="video_format must be one of"):
        video.resolve_format("webm")


def test_wandb_stores_mp4_videos_and_gifs_when_asked(tmp_path, monkeypatch):
    require("wandb")
    require("av", reason="MP4 needs the video extra")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for video_format, suffix in (("auto", ".mp4"), ("gif", ".gif")):
        logdir = tmp_path / video_format
        output = WandBOutput(dir=logdir, video_format=video_format, parallel=False)
        output([(1, "report/clip", clip())])
        output([(2, "train/loss", 1.0)])
        output.close()
        pattern = os.path.join(
            logdir, "wandb", "offline-run-*", "files", "media", "videos", "**", "*"
        )
        (path,) = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
        assert path.endswith(suffix)
        assert len(decode_video(path)) == 7
