"""media.py: uint8 conversion, PNG/GIF encoding, the shared GIF cache."""

import gc
import io

import numpy as np
import pytest
from PIL import Image
from PIL import ImageSequence

from keras_dreamer.logger import media

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(
    "value, expected",
    [
        (np.array([0.0, 0.5, 1.0]), [0, 128, 255]),
        (np.array([-0.5, 1.5, np.nan]), [0, 255, 0]),
        (np.array([0.999, 0.001], np.float16), [255, 0]),
        (np.array([True, False]), [255, 0]),
        (np.array([-3, 7, 300], np.int32), [0, 7, 255]),
        (np.array([9, 250], np.uint8), [9, 250]),
    ],
)
def test_to_uint8_scales_floats_and_clips(value, expected):
    result = media.to_uint8(value)
    assert result.dtype == np.uint8
    assert result.tolist() == expected


def decode_gif(data):
    image = Image.open(io.BytesIO(data))
    assert image.format == "GIF"
    frames = [
        np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)
    ]
    return np.stack(frames), image.info


def test_gif_keeps_every_frame_even_repeated_ones():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (12, 10, 14, 3), dtype=np.uint8)
    video[3:7] = video[2]  # repeated frames
    video[-4:] = 0  # the black tail of an open-loop report
    frames, info = decode_gif(media.encode_gif(video, fps=10))
    assert frames.shape == video.shape
    assert info["duration"] == 100 and info["loop"] == 0
    np.testing.assert_array_equal(frames[-4:], 0)
    np.testing.assert_array_equal(
        frames[3:7], np.broadcast_to(frames[2], (4, 10, 14, 3))
    )


def test_gif_colours_are_close_to_the_video():
    y, x = np.mgrid[0:32, 0:48]
    frame = np.stack([x * 5, y * 7, (x + y) * 3], -1) % 256
    video = np.stack([frame, 255 - frame]).astype(np.uint8)
    frames, _ = decode_gif(media.encode_gif(video))
    assert np.abs(frames.astype(int) - video).mean() < 8


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_gif_accepts_gray_rgb_and_rgba_floats(channels):
    video = np.full((3, 5, 6, channels), 0.5, np.float32)
    frames, _ = decode_gif(media.encode_gif(video))
    assert frames.shape == (3, 5, 6, 3)
    np.testing.assert_array_equal(frames, 128)


def test_png_decodes_to_the_logged_shape():
    rgb = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(media.encode_png(rgb))))
    np.testing.assert_array_equal(decoded, rgb)
    gray = Image.open(io.BytesIO(media.encode_png(np.ones((7, 9, 1)))))
    assert gray.mode == "L" and gray.size == (9, 7)


@pytest.mark.parametrize(
    "encode, shape", [(media.encode_gif, (4, 4, 3)), (media.encode_png, (2, 4, 4, 3))]
)
def test_encoders_reject_wrong_ranks(encode, shape):
    with pytest.raises(ValueError, match="shape|Expected"):
        encode(np.zeros(shape))


def test_gif_bytes_encodes_each_video_once_and_forgets_it():
    video = np.zeros((2, 4, 4, 3), np.uint8)
    before = len(media._GIF_CACHE)
    first = media.gif_bytes(video, 15)
    assert media.gif_bytes(video, 15) is first
    assert media.gif_bytes(video, 5) is not first  # another fps, another GIF
    del video
    gc.collect()
    assert len(media._GIF_CACHE) == before


def test_media_filename_replaces_slashes():
    assert media.media_filename("report/openloop/image", 1000) == (
        "report_openloop_image_1000.gif"
    )
