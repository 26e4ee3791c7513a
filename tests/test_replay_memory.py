"""The replay's memory: bytes per step, capacities in bytes, the fit check."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_dreamer import presets
from keras_dreamer.data import Collector
from keras_dreamer.data import Replay
from keras_dreamer.data import context
from keras_dreamer.data import memory
from keras_dreamer.envs import Catch
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete
from tests.helpers import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()

OBS_SPACE = {
    "image": Box((64, 64, 3), 0, 255, "uint8"),
    "vector": Box((5,), dtype="float32"),
}


@pytest.mark.backend_independent
def test_step_bytes_is_the_hand_count():
    # image 64*64*3 uint8 + vector 5 float32 + action one-hot 18 float32
    # + reward float32 + is_first, is_last, is_terminal bools + int64 id.
    hand = 64 * 64 * 3 * 1 + 5 * 4 + 18 * 4 + 4 + 3 * 1 + 8
    assert hand == 12395
    assert memory.step_bytes(OBS_SPACE, Discrete(18)) == hand
    # Stored latents (float32): deter 512 + stoch 32x16.
    latents = {"latent/deter": (512,), "latent/stoch": (32, 16)}
    assert memory.step_bytes(OBS_SPACE, Discrete(18), latents) == hand + 4 * 1024


@pytest.mark.backend_independent
def test_step_bytes_matches_what_the_replay_allocates():
    replay = Replay(64, chunk_size=16)
    for t in range(3):
        replay.add(
            {
                "image": np.zeros((64, 64, 3), np.uint8),
                "vector": np.zeros(5, np.float32),
                "action": np.eye(18, dtype=np.float32)[t],
                "reward": 0.0,
                "is_first": t == 0,
                "is_last": False,
                "is_terminal": False,
            }
        )
    stats = replay.stats()
    assert stats["replay/bytes"] == 16 * memory.step_bytes(OBS_SPACE, Discrete(18))
    assert stats["replay/memory_gb"] == stats["replay/bytes"] / 1e9


@pytest.mark.backend_independent
def test_replay_bytes_is_logged_by_the_collector():
    collector = Collector(Catch(size=16), batch_size=2, batch_length=8, seed=0)
    collector[0]
    metrics = collector.drain_metrics()
    per_step = memory.step_bytes(collector.obs_space, collector.act_space)
    chunks = -(-len(collector.replay) // collector.replay.chunk_size)
    assert metrics["replay/bytes"] == chunks * collector.replay.chunk_size * per_step


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "text, expected",
    [
        ("8GB", 8 * 10**9),
        ("8 gb", 8 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1.5TB", 15 * 10**11),
        ("2KiB", 2048),
        ("100", 100),
        ("64B", 64),
    ],
)
def test_parse_bytes(text, expected):
    assert memory.parse_bytes(text) == expected


@pytest.mark.backend_independent
@pytest.mark.parametrize("text", ["8 gigs", "GB", "-1GB", "1e3MB", ""])
def test_parse_bytes_refuses_what_does_not_parse(text):
    with pytest.raises(ValueError, match="cannot read .* as a size in bytes"):
        memory.parse_bytes(text)


@pytest.mark.backend_independent
def test_capacity_in_bytes_is_steps_that_fit():
    assert memory.capacity_steps("1MB", 1000) == 1000
    assert memory.capacity_steps("1B", 1000) == 1  # never an empty replay
    assert memory.capacity_steps(5000, 1000) == 5000


@pytest.mark.backend_independent
def test_fit_check_says_what_fits():
    memory.check_fits(1000, 1000, available=10**9)
    with pytest.raises(MemoryError) as error:
        memory.check_fits(10**6, 1000, available=10**9)
    message = str(error.value)
    assert "\n" not in message
    assert "at most 800,000 steps fit" in message
    assert "train.replay_capacity = 800000 or '800MB'" in message


def train_cli(logdir, *bindings):
    args = [sys.executable, "-m", "keras_dreamer.cli", "train", "--logdir", logdir]
    args += ["--gin_file", os.path.join("gin_configs", "debug.gin")]
    for binding in bindings:
        args += ["--gin_param", binding]
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": BACKEND}
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def error_lines(result):
    return [line for line in result.stderr.splitlines() if "keras-dreamer" in line]


@pytest.mark.backend_independent
def test_cli_refuses_a_replay_that_cannot_fit(tmp_path):
    result = train_cli(str(tmp_path), "train.replay_capacity = '10TB'")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("keras-dreamer train: error: a full replay of ")
    assert "does not fit" in errors[0] and "steps fit" in errors[0]
    assert "lower train.replay_capacity" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ckpt").exists() or not os.listdir(tmp_path / "ckpt")
    assert not (tmp_path / "metrics.jsonl").exists()


def test_cli_capacity_in_bytes(tmp_path):
    bad = train_cli(str(tmp_path / "bad"), "train.replay_capacity = '8 gigs'")
    assert bad.returncode == 2, bad.stderr[-3000:]
    errors = error_lines(bad)
    assert (
        len(errors) == 1
        and "train.replay_capacity: cannot read '8 gigs'" in (errors[0])
    )
    good = train_cli(
        str(tmp_path / "good"),
        "train.replay_capacity = '2MB'",
        "train.steps = 2",
        "train.report_every = None",
        "train.eval_every = None",
    )
    assert good.returncode == 0, good.stderr[-3000:]
    lines = read_jsonl(tmp_path / "good" / "metrics.jsonl")
    assert lines[-1]["replay/bytes"] > 0
    # debug.gin trains with replay context: each step stores its latent too.
    debug = presets.resolve("debug")
    latents = context.latent_spec(debug["deter"], debug["stoch"], debug["classes"])
    assert lines[-1]["replay/bytes"] <= 2e6 + 1024 * memory.step_bytes(
        {"image": Box((16, 16, 3), 0, 255, "uint8")}, Discrete(3), latents
    )
