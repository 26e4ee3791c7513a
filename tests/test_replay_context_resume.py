"""`keras-dreamer train` with replay context (on by default): the saved
replay holds the latents acting and the write-back stored, and a resumed
run trains on them (real files, the debug config)."""

import os

import gin
import numpy as np

from keras_dreamer import checkpoint
from keras_dreamer.batch import LATENT_KEYS
from keras_dreamer.batch import ROW_KEY
from keras_dreamer.data import Replay
from keras_dreamer.train.command import resolve_gin_file
from keras_dreamer.train.job import train
from keras_dreamer.train.run import RunConfig
from keras_dreamer.train.run import setup


def test_a_resumed_run_keeps_the_replay_latents(tmp_path):
    logdir = str(tmp_path / "run")
    gin.clear_config()
    try:
        gin.parse_config_file(resolve_gin_file("debug.gin"))
        gin.parse_config(
            ["train.steps = 4", "train.report_every = None", "train.eval_every = None"]
        )
        train(logdir=logdir)
    finally:
        gin.clear_config()
    saved_dir = os.path.join(logdir, "ckpt", checkpoint.REPLAY_DIR)
    saved = Replay.from_directory(saved_dir)
    stream = saved.stream(0)
    # Acting stored a latent for every step (the agent acts from the start):
    # a one-hot sample (a step without one would store zeros).
    assert np.all(stream[LATENT_KEYS[1]].sum(-1) == 1)
    assert np.abs(stream[LATENT_KEYS[0]]).sum() > 0

    gin.clear_config()
    try:
        gin.parse_config_file(resolve_gin_file("debug.gin"))
        config = RunConfig(
            batch_size=2,
            batch_length=8,
            replay_capacity=2000,
            replay_context=1,
            replay_online=True,
        )
        run = setup(logdir, config)
    finally:
        gin.clear_config()
    try:
        assert run.resumed
        resumed = run.replay.stream(0)
        for key in LATENT_KEYS:
            np.testing.assert_array_equal(resumed[key][: len(saved)], stream[key])
        batch = run.collector[0]
        assert batch[LATENT_KEYS[0]].shape == (2, 9, saved.spec[LATENT_KEYS[0]][0][0])
        assert batch[ROW_KEY].shape == (2, 9)
    finally:
        run.collector.close()
