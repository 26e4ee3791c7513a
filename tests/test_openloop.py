import keras
import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer import openloop
from tests.helpers import SMALL_IMAGE
from tests.helpers import SMALL_MODEL
from tests.helpers import random_batch

GREEN, RED = [0, 255, 0], [255, 0, 0]


def crafted(batch=2, length=4, height=6, width=5):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (batch, length, height, width, 3), dtype=np.uint8)
    model = rng.integers(0, 256, (batch, length, height, width, 3), dtype=np.uint8)
    return truth, model


def test_layout_pixel_by_pixel():
    truth, model = crafted()
    video = openloop.compose(truth, model, observed=2)
    b, t, h, w, _ = truth.shape
    assert video.shape == (t + 10, 3 * h + 4, b * (w + 4), 3)
    assert video.dtype == np.uint8
    for seq in range(b):
        x0 = seq * (w + 4)
        for step in range(t):
            frame = video[step, :, x0 : x0 + w + 4]
            inner = frame[2:-2, 2:-2]
            np.testing.assert_array_equal(inner[:h], truth[seq, step])
            np.testing.assert_array_equal(inner[h : 2 * h], model[seq, step])
            error = (
                model[seq, step].astype(int) - truth[seq, step].astype(int) + 255
            ) // 2
            np.testing.assert_array_equal(inner[2 * h :], error)
            color = GREEN if step < 2 else RED
            border = np.ones(frame.shape[:2], bool)
            border[2:-2, 2:-2] = False
            np.testing.assert_array_equal(
                frame[border], np.tile(color, (border.sum(), 1))
            )
    np.testing.assert_array_equal(video[t:], 0)  # the black tail


def test_perfect_prediction_gives_grey_error():
    truth, _ = crafted()
    video = openloop.compose(truth, truth, observed=1)
    h = truth.shape[2]
    error_rows = video[:4, 2 + 2 * h : 2 + 3 * h, 2:7]
    np.testing.assert_array_equal(error_rows, 127)


def test_error_brightness_direction():
    truth = np.full((1, 1, 2, 2, 3), 100, np.uint8)
    too_bright = np.full_like(truth, 200)
    too_dark = np.full_like(truth, 0)
    assert openloop.error_frames(truth, too_bright).min() > 127
    assert openloop.error_frames(truth, too_dark).max() < 127
    np.testing.assert_array_equal(
        openloop.error_frames(np.zeros_like(truth), too_bright * 0 + 255), 255
    )


def test_grayscale_is_shown_in_rgb():
    truth = np.zeros((1, 3, 4, 4, 1), np.uint8)
    video = openloop.compose(truth, truth, observed=1)
    assert video.shape == (13, 16, 8, 3)
    np.testing.assert_array_equal(video[0, 0, 0], GREEN)
    np.testing.assert_array_equal(video[2, 0, 0], RED)


def test_bad_inputs():
    truth, model = crafted()
    with pytest.raises(ValueError, match="RB, T, H, W, C"):
        openloop.compose(truth, model[:1], observed=2)
    with pytest.raises(ValueError, match="uint8"):
        openloop.compose(truth.astype(np.float32), model, observed=2)
    with pytest.raises(ValueError, match="observed"):
        openloop.compose(truth, model, observed=5)


def test_world_model_report():
    wm = kd.WorldModel({"image": SMALL_IMAGE}, kd.Discrete(3), seed=0, **SMALL_MODEL)
    batch = random_batch(batch=8, length=6)
    report = wm.report(batch)
    assert report["openloop/image"].shape == (6 + 10, 3 * 16 + 4, 6 * (16 + 4), 3)
    assert report["openloop/image"].dtype == np.uint8
    for key in ("loss", "loss/image", "loss/rew", "loss/con", "loss/dyn", "loss/rep"):
        assert np.isfinite(report[key]), key
    video = report["openloop/image"]
    # Truth rows are the batch's first six sequences, borders green then red.
    np.testing.assert_array_equal(video[0, 2:18, 2:18], batch["image"][0, 0])
    np.testing.assert_array_equal(video[5, 2:18, 22:38], batch["image"][1, 5])
    np.testing.assert_array_equal(video[2, 0, 0], GREEN)
    np.testing.assert_array_equal(video[3, 0, 0], RED)
    # A second report reuses the compiled function and draws new samples.
    again = wm.report(batch)
    assert again["openloop/image"].shape == video.shape
    small = wm.report(random_batch(batch=2, length=4))
    assert small["openloop/image"].shape == (14, 52, 40, 3)
    with pytest.raises(ValueError, match="at least 2"):
        wm.report(random_batch(batch=2, length=1))


def test_imagined_half_does_not_depend_on_the_second_half_images():
    wm = kd.WorldModel({"image": SMALL_IMAGE}, kd.Discrete(3), seed=0, **SMALL_MODEL)
    batch = random_batch(batch=2, length=6, seed=3)
    changed = {key: np.array(value) for key, value in batch.items()}
    rng = np.random.default_rng(7)
    changed["image"][:, 3:] = rng.integers(0, 256, changed["image"][:, 3:].shape)
    assert not np.array_equal(changed["image"], batch["image"])
    # The same noise for both reports: a seeded model, reset between them.
    state = [
        np.array(keras.ops.convert_to_numpy(v)) for v in wm.non_trainable_variables
    ]
    first = wm.report(batch)["openloop/image"]
    for variable, value in zip(wm.non_trainable_variables, state):
        variable.assign(value)
    second = wm.report(changed)["openloop/image"]
    rows = slice(16 + 2, 2 * 16 + 2)  # the model row (truth row is 0:18)
    # Observed half: model rows may differ; imagined half (t >= 3): identical.
    np.testing.assert_array_equal(first[3:6, rows], second[3:6, rows])
    assert not np.array_equal(first[3:6, : 16 + 2], second[3:6, : 16 + 2])


def test_report_with_two_image_keys():
    obs = {"image": SMALL_IMAGE, "depth": (16, 16, 1)}
    wm = kd.WorldModel(obs, kd.Discrete(3), **SMALL_MODEL)
    batch = random_batch(batch=2, length=4)
    batch["depth"] = np.zeros((2, 4, 16, 16, 1), np.uint8)
    report = wm.report(batch)
    assert report["openloop/image"].shape == (14, 52, 40, 3)
    assert report["openloop/depth"].shape == (14, 52, 40, 3)
