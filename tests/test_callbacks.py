import glob
import io
import os
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

import keras_dreamer as kd
from keras_dreamer.logger.video import mp4_available
from tests.helpers import SMALL_IMAGE
from tests.helpers import SMALL_MODEL
from tests.helpers import Batches
from tests.helpers import RecordLogs
from tests.helpers import decode_video
from tests.helpers import random_batch
from tests.helpers import read_events
from tests.helpers import read_jsonl

B, T = 2, 6
FRAMES = (T + 10, 3 * 16 + 4, B * (16 + 4), 3)


def random_batches(steps):
    """`steps` batches per epoch, cycling through three random batches."""
    return Batches([random_batch(batch=B, length=T, seed=i) for i in range(3)], steps)


def small_model(**kwargs):
    wm = kd.WorldModel(
        {"image": SMALL_IMAGE}, kd.Discrete(3), **{**SMALL_MODEL, **kwargs}
    )
    wm.compile(optimizer=kd.optimizers.LaProp(learning_rate=1e-3, warmup=0))
    return wm


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short training run with every output on (W&B offline)."""
    logdir = tmp_path_factory.mktemp("run")
    received = []
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    try:
        wm = small_model(seed=0)
        record = RecordLogs()
        callback = kd.DreamerReportCallback(
            logdir,
            outputs=("terminal", "jsonl", "tensorboard", "wandb", received.extend),
            log_every=3,
            report_every=4,
            report_data=random_batch(batch=B, length=T, seed=9),
            frames_per_step=B * T,
        )
        wm.fit(
            random_batches(7),
            epochs=2,
            verbose=0,
            callbacks=[record, callback],
            shuffle=False,
        )
    finally:
        mp.undo()
    return {
        "logdir": str(logdir),
        "logs": record.logs,
        "received": received,
        "model": wm,
        "callback": callback,
    }


def test_jsonl_lines_at_the_logged_steps(run):
    lines = read_jsonl(os.path.join(run["logdir"], "metrics.jsonl"))
    train_steps = [line["step"] for line in lines if "train/loss" in line]
    # 14 steps over two epochs of 7: every 3rd step, then the rest at the end.
    assert train_steps == [3, 6, 9, 12, 14]
    report_steps = [line["step"] for line in lines if "report/loss" in line]
    assert report_steps == [0, 4, 8, 12]
    first = next(line for line in lines if "train/loss" in line)
    for key in ("loss/image", "loss/rew", "loss/con", "loss/dyn", "loss/rep"):
        assert f"train/{key}" in first
    assert {"train/dyn_ent", "train/opt/grad_norm", "train/opt/lr", "fps/train"} <= set(
        first
    )
    assert first["fps/train"] > 0
    assert any(key.startswith("usage/") for key in first)
    assert all(line["step"] > prev["step"] for prev, line in zip(lines, lines[1:]))


def test_window_means_equal_the_mean_of_step_values(run):
    lines = read_jsonl(os.path.join(run["logdir"], "metrics.jsonl"))
    train = [line for line in lines if "train/loss" in line]
    logs = run["logs"]
    windows = [(0, 3), (3, 6), (6, 9), (9, 12), (12, 14)]
    for line, (start, stop) in zip(train, windows):
        for key in ("loss", "loss/image", "loss/dyn", "opt/grad_norm"):
            expected = np.mean([logs[i][key] for i in range(start, stop)])
            np.testing.assert_allclose(line[f"train/{key}"], expected, rtol=1e-6)


def test_tensorboard_holds_scalars_and_the_openloop_gif(run):
    events = read_events(run["logdir"])
    tags = events.Tags()
    assert "train/loss" in tags["scalars"]
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == [3, 6, 9, 12, 14]
    assert "report/openloop/image" in tags["images"]
    images = events.Images("report/openloop/image")
    assert [image.step for image in images] == [0, 4, 8, 12]
    gif = Image.open(io.BytesIO(images[0].encoded_image_string))
    assert gif.format == "GIF"
    assert gif.n_frames == T + 10
    assert (gif.height, gif.width) == FRAMES[1:3]


def test_media_directory_holds_the_gifs(run):
    files = sorted(glob.glob(os.path.join(run["logdir"], "media", "*.gif")))
    names = [os.path.basename(f) for f in files]
    assert "report_openloop_image_0.gif" in names
    assert "report_openloop_image_12.gif" in names
    with Image.open(files[0]) as gif:
        assert gif.n_frames == T + 10
        frame = np.asarray(gif.convert("RGB"))
    assert frame.shape == FRAMES[1:]


def test_wandb_offline_run_holds_the_video(run):
    pattern = os.path.join(
        run["logdir"],
        "wandb",
        "offline-run-*",
        "files",
        "media",
        "videos",
        "**",
        # MP4 when PyAV (the `video` extra) is installed, else GIF.
        "*.mp4" if mp4_available() else "*.gif",
    )
    videos = glob.glob(pattern, recursive=True)
    assert len(videos) == 4
    assert len(decode_video(videos[0])) == T + 10


def test_custom_sink_receives_every_summary(run):
    received = run["received"]
    names = {name for _, name, _ in received}
    assert {"train/loss", "fps/train", "report/openloop/image", "report/loss"} <= names
    lines = read_jsonl(os.path.join(run["logdir"], "metrics.jsonl"))
    scalars = {(step, name) for step, name, value in received if np.ndim(value) == 0}
    from_jsonl = {
        (line["step"], key) for line in lines for key in line if key != "step"
    }
    assert from_jsonl == scalars
    (video,) = [v for s, n, v in received if n == "report/openloop/image" and s == 0]
    assert video.shape == FRAMES and video.dtype == np.uint8


def test_resumed_fit_continues_the_step(run, tmp_path):
    wm = run["model"]
    callback = kd.DreamerReportCallback(
        tmp_path, outputs=("jsonl",), log_every=5, report_every=None, frames_per_step=12
    )
    wm.fit(
        random_batches(5),
        epochs=3,
        initial_epoch=2,
        verbose=0,
        callbacks=[callback],
        shuffle=False,
    )
    steps = [line["step"] for line in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == [15, 19]
    assert callback.step == 19


def test_two_image_keys_give_two_videos(tmp_path):
    obs = {"image": SMALL_IMAGE, "depth": (16, 16, 1)}
    wm = kd.WorldModel(obs, kd.Discrete(3), **SMALL_MODEL)
    wm.compile()
    batch = random_batch(batch=B, length=T)
    batch["depth"] = np.full((B, T, 16, 16, 1), 80, np.uint8)
    callback = kd.DreamerReportCallback(
        tmp_path,
        outputs=("jsonl",),
        log_every=1,
        report_every=1,
        report_data=batch,
        frames_per_step=B * T,
    )
    wm.fit(batch, batch_size=B, epochs=1, verbose=0, callbacks=[callback])
    names = sorted(
        os.path.basename(f) for f in glob.glob(str(tmp_path / "media" / "*.gif"))
    )
    assert names == [
        "report_openloop_depth_0.gif",
        "report_openloop_depth_1.gif",
        "report_openloop_image_0.gif",
        "report_openloop_image_1.gif",
    ]


def test_episode_metrics_from_the_train_data(tmp_path):
    class Source(Batches):
        batch_spec = kd.data.batch_spec({"image": SMALL_IMAGE}, kd.Discrete(3), B, T)

        def __init__(self):
            super().__init__([random_batch(batch=B, length=T)], 4)
            self.drains = 0

        def drain_metrics(self):
            self.drains += 1
            return {
                "episode/score": float(self.drains),
                "episode/length": 10.0,
                "fps/env": 5.0,
            }

    source = Source()
    callback = kd.DreamerReportCallback(
        tmp_path,
        outputs=("jsonl", "scores"),
        log_every=2,
        report_every=None,
        train_data=source,
    )
    small_model().fit(source, epochs=1, verbose=0, callbacks=[callback], shuffle=False)
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert [line["episode/score"] for line in lines] == [1.0, 2.0]
    assert all(line["fps/train"] > 0 for line in lines)  # B*T from batch_spec
    scores = read_jsonl(tmp_path / "scores.jsonl")
    assert [(line["step"], line["episode/score"]) for line in scores] == [
        (2, 1.0),
        (4, 2.0),
    ]
    assert all(
        key in ("step", "episode/score", "episode/length")
        for line in scores
        for key in line
    )


class TickingClock:
    """Stands in for the `time` module of `kd.logger.usage`: every
    `perf_counter()` call is one second later, so `fps/train` is exactly the
    frames of a window."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


@pytest.fixture
def ticking_clock(monkeypatch):
    from keras_dreamer.logger import usage as usage_module

    monkeypatch.setattr(usage_module, "time", TickingClock())


def test_fps_train_by_default_and_exact_with_varying_batch_sizes(
    tmp_path, ticking_clock
):
    # A PyDataset of batches, no frames_per_step, no train_data; batch sizes
    # 2 and 3 alternate, so the frames per window are (2 + 3) * T.
    batches = Batches(
        [random_batch(batch=2, length=T, seed=0), random_batch(batch=3, length=T)], 4
    )
    callback = kd.DreamerReportCallback(
        tmp_path, outputs=("jsonl",), log_every=2, report_every=None, usage=False
    )
    record = RecordLogs()
    small_model().fit(
        batches, epochs=1, verbose=0, callbacks=[record, callback], shuffle=False
    )
    assert [logs["frames"] for logs in record.logs] == [2 * T, 3 * T] * 2
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert [line["fps/train"] for line in lines] == [5.0 * T, 5.0 * T]
    assert not any("frames" in key for line in lines for key in line)


def test_fps_train_by_default_with_a_fixed_batch(tmp_path, ticking_clock):
    callback = kd.DreamerReportCallback(
        tmp_path, outputs=("jsonl",), log_every=1, report_every=None, usage=False
    )
    batch = random_batch(batch=B, length=T)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small_model().fit(
            batch, batch_size=B, epochs=1, verbose=0, callbacks=[callback]
        )
    assert not [w for w in caught if "fps/train" in str(w.message)]
    (line,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert line["fps/train"] == B * T


def test_frames_per_step_overrides_the_logged_frames(tmp_path, ticking_clock):
    callback = kd.DreamerReportCallback(
        tmp_path,
        outputs=("jsonl",),
        log_every=1,
        report_every=None,
        usage=False,
        frames_per_step=100,
    )
    batch = random_batch(batch=B, length=T)
    small_model().fit(batch, batch_size=B, epochs=1, verbose=0, callbacks=[callback])
    (line,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert line["fps/train"] == 100.0


def test_nan_loss_is_logged_and_stops_training(tmp_path):
    batch = random_batch(batch=B, length=T)
    batch["reward"][0, 0] = np.nan
    callback = kd.DreamerReportCallback(
        tmp_path,
        outputs=("jsonl",),
        log_every=100,
        report_every=None,
        frames_per_step=12,
    )
    record = RecordLogs()
    with pytest.warns(RuntimeWarning, match="non-finite loss .* at step 1; stopping"):
        small_model().fit(
            batch,
            batch_size=1,
            epochs=3,
            verbose=0,
            callbacks=[record, callback],
            shuffle=False,
        )
    assert len(record.logs) == 1  # stopped after the first step
    (line,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert line["step"] == 1 and line["train/loss"] is None  # NaN is written as null


def test_interrupted_fit_writes_what_is_pending(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise KeyboardInterrupt

    callback = kd.DreamerReportCallback(
        tmp_path,
        outputs=("jsonl",),
        log_every=100,
        report_every=None,
        frames_per_step=12,
    )
    with pytest.raises(KeyboardInterrupt):
        small_model().fit(
            random_batches(6),
            epochs=1,
            verbose=0,
            callbacks=[callback, Interrupt()],
            shuffle=False,
        )
    (line,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert line["step"] == 3 and "train/loss" in line
    assert callback.logger is None  # closed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"outputs": ("jsonl", "tensorbored")}, "Unknown output 'tensorbored'"),
        ({"log_every": 0}, "log_every must be a positive"),
        ({"log_every": -5}, "log_every must be a positive"),
        ({"report_every": 2.5}, "integer number of steps"),
        ({"log_every": None}, "Set log_every or log_every_secs"),
    ],
)
def test_bad_arguments_fail_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kd.DreamerReportCallback(tmp_path, **kwargs)


def test_bad_report_data_fails_before_training(tmp_path):
    wm = small_model()
    before = [np.asarray(keras.ops.convert_to_numpy(w)) for w in wm.trainable_weights]
    short = random_batch(batch=B, length=1)
    missing = {k: v for k, v in random_batch().items() if k != "image"}
    for data, message in [(short, "at least 2"), (missing, "missing key")]:
        callback = kd.DreamerReportCallback(
            tmp_path, outputs=("jsonl",), report_data=data
        )
        with pytest.raises(ValueError, match=message):
            wm.fit(
                random_batches(2),
                epochs=1,
                verbose=0,
                callbacks=[callback],
                shuffle=False,
            )
    after = [np.asarray(keras.ops.convert_to_numpy(w)) for w in wm.trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_bad_logdir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    callback = kd.DreamerReportCallback(blocker, outputs=("jsonl",))
    with pytest.raises(OSError, match="not a directory"):
        small_model().fit(
            random_batches(2), epochs=1, verbose=0, callbacks=[callback], shuffle=False
        )
    callback = kd.DreamerReportCallback(blocker / "sub", outputs=("jsonl",))
    with pytest.raises(OSError, match="Cannot create logdir"):
        small_model().fit(
            random_batches(2), epochs=1, verbose=0, callbacks=[callback], shuffle=False
        )


def test_episodes_pushed_to_the_callback(tmp_path):
    # Real Catch episodes from a driver, pushed at steps 1 and 3 of the fit.
    env = kd.envs.make("catch", size=16, lives=1)
    driver = kd.data.Driver(env, kd.data.RandomPolicy(env.act_space, 0), seeds=[0])
    episodes = []
    driver.on_episode(episodes.append)
    while len(episodes) < 3:
        driver.step()
    pushes = {1: episodes[:2], 3: episodes[2:]}
    callback = kd.DreamerReportCallback(
        tmp_path,
        outputs=("jsonl", "scores"),
        log_every=2,
        report_every=2,
        report_data=random_batch(batch=B, length=T, seed=9),
        frames_per_step=B * T,
        usage=False,
    )

    class Push(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for episode in pushes.get(batch + 1, []):
                callback.add_episode(episode)

    small_model().fit(
        random_batches(4), epochs=1, verbose=0, callbacks=[Push(), callback]
    )
    lines = {line["step"]: line for line in read_jsonl(tmp_path / "metrics.jsonl")}
    for step, pushed in ((2, episodes[:2]), (4, episodes[2:])):
        assert lines[step]["episode/count"] == len(pushed)
        assert lines[step]["episode/score"] == np.mean([e.score for e in pushed])
        assert lines[step]["episode/length"] == np.mean([e.length for e in pushed])
    videos = sorted(os.listdir(tmp_path / "media"))
    assert [v for v in videos if v.startswith("episode_policy_image")] == [
        "episode_policy_image_2.gif",
        "episode_policy_image_4.gif",
    ]
    with Image.open(tmp_path / "media" / "episode_policy_image_4.gif") as gif:
        assert gif.n_frames == episodes[2].length  # the latest episode's video
