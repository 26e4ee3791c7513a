"""Replay: sampling, eviction, worker streams, save/load and bad input."""

import os

import numpy as np
import pytest

from keras_dreamer.data import CorruptReplayError
from keras_dreamer.data import Replay

pytestmark = pytest.mark.backend_independent


def make_step(index, first=False, last=False, image_shape=(4, 4, 3)):
    """A step whose reward is its index, so sampled data can be traced back."""
    return {
        "image": np.full(image_shape, index % 256, np.uint8),
        "action": np.eye(3, dtype=np.float32)[index % 3],
        "reward": np.float32(index),
        "is_first": first,
        "is_last": last,
        "is_terminal": last and index % 2 == 0,
    }


def fill(replay, episode_lengths, worker=0, offset=0):
    """Add whole episodes; returns the indices where episodes start."""
    index, starts = offset, []
    for length in episode_lengths:
        starts.append(index)
        for t in range(length):
            replay.add(make_step(index, t == 0, t == length - 1), worker=worker)
            index += 1
    return starts


def assert_consecutive(batch):
    np.testing.assert_array_equal(np.diff(batch["reward"], axis=1), 1)


def test_sample_shapes_and_dtypes():
    replay = Replay(100, chunk_size=8, seed=0)
    fill(replay, [30])
    batch = replay.sample(5, 7)
    assert set(batch) == {
        "image",
        "action",
        "reward",
        "is_first",
        "is_last",
        "is_terminal",
    }
    assert batch["image"].shape == (5, 7, 4, 4, 3) and batch["image"].dtype == np.uint8
    assert batch["action"].shape == (5, 7, 3) and batch["action"].dtype == np.float32
    assert batch["reward"].shape == (5, 7) and batch["reward"].dtype == np.float32
    for key in ("is_first", "is_last", "is_terminal"):
        assert batch[key].shape == (5, 7) and batch[key].dtype == bool
    np.testing.assert_array_equal(batch["image"][:, :, 0, 0, 0], batch["reward"] % 256)


def test_is_first_exactly_at_episode_starts():
    replay = Replay(1000, chunk_size=16, seed=1)
    starts = set(fill(replay, [5, 9, 1, 3, 12, 7, 20, 2]))
    batch = replay.sample(200, 8)
    assert_consecutive(batch)
    expected = np.isin(batch["reward"].astype(int), list(starts))
    np.testing.assert_array_equal(batch["is_first"], expected)
    assert batch["is_first"][:, 1:].any()  # sequences do cross episode boundaries
    assert replay.stats()["replay/episodes"] == 8


def test_never_reads_past_written_data():
    replay = Replay(100, chunk_size=8, seed=2)
    fill(replay, [37])
    whole = replay.sample(3, 37)
    for row in whole["reward"]:
        np.testing.assert_array_equal(row, np.arange(37))
    batch = replay.sample(500, 10)
    assert_consecutive(batch)
    assert batch["reward"].min() == 0 and batch["reward"].max() == 36
    starts = batch["reward"][:, 0]
    assert set(starts.astype(int)) == set(range(28))  # uniform over all 28 starts
    with pytest.raises(ValueError, match="longest worker stream holds 37 steps"):
        replay.sample(1, 38)


def test_fifo_eviction_order():
    replay = Replay(10, chunk_size=4, seed=0)
    fill(replay, [25])
    assert len(replay) == 10
    np.testing.assert_array_equal(replay.stream(0)["reward"], np.arange(15, 25))
    np.testing.assert_array_equal(replay.sample(2, 10)["reward"][0], np.arange(15, 25))
    # Across workers the oldest step goes first, whichever worker wrote it.
    replay = Replay(6, chunk_size=2)
    for index in range(20):
        replay.add(make_step(index, index < 2), worker=index % 2)
    np.testing.assert_array_equal(replay.stream(0)["reward"], [14, 16, 18])
    np.testing.assert_array_equal(replay.stream(1)["reward"], [15, 17, 19])
    assert replay.stats()["replay/episodes"] == 0  # both starts were evicted


def test_sequences_never_mix_workers():
    replay = Replay(200, chunk_size=8, seed=3)
    fill(replay, [10, 15], worker=0, offset=0)
    fill(replay, [5, 30], worker="b", offset=1000)
    fill(replay, [3], worker=2, offset=2000)  # too short to sample from
    batch = replay.sample(300, 6)
    assert_consecutive(batch)
    origin = batch["reward"] // 1000
    assert np.all(origin == origin[:, :1])
    assert set(origin[:, 0].astype(int)) == {0, 1}
    assert replay.workers == [0, "b", 2]
    assert replay.num_sequences(6) == (25 - 5) + (35 - 5)


def test_sampling_is_deterministic_given_a_seed():
    batches = []
    for _ in range(2):
        replay = Replay(50, chunk_size=8, seed=42)
        fill(replay, [20, 40])
        batches.append(replay.sample(8, 5))
    for key in batches[0]:
        np.testing.assert_array_equal(batches[0][key], batches[1][key])


def filled_replay(seed=0):
    """Two workers, evicted heads, chunk-crossing streams."""
    replay = Replay(40, chunk_size=8, seed=seed)
    for index in range(70):
        replay.add(
            make_step(index, index % 11 == 0, index % 11 == 10), worker=index % 2
        )
    replay.metadata["note"] = "kept"
    return replay


def assert_same(a, b):
    """Same steps, streams and counts (allocated memory may differ)."""
    for key in ("replay/size", "replay/episodes"):
        assert a.stats()[key] == b.stats()[key]
    assert a.workers == b.workers and a.spec == b.spec
    for worker in a.workers:
        for key, value in a.stream(worker).items():
            np.testing.assert_array_equal(value, b.stream(worker)[key])


def test_save_load_round_trip_is_identical(tmp_path):
    replay = filled_replay()
    replay.save(tmp_path)
    loaded = Replay(40, chunk_size=8).load(tmp_path)
    assert_same(replay, loaded)
    assert loaded.metadata == {"note": "kept"}
    for _ in range(3):  # the sampling RNG resumes where it was saved
        expected, actual = replay.sample(4, 9), loaded.sample(4, 9)
        for key in expected:
            np.testing.assert_array_equal(expected[key], actual[key])
    for index in range(70, 85):  # and eviction continues in the same order
        replay.add(make_step(index), worker=index % 3)
        loaded.add(make_step(index), worker=index % 3)
    assert_same(replay, loaded)
    # A different chunk size and capacity load the same steps.
    assert_same(replay, Replay(45, chunk_size=5).load(replay.save(tmp_path / "again")))


def test_save_is_incremental_and_cleans_up(tmp_path):
    replay = filled_replay()
    replay.save(tmp_path)
    first = set(os.listdir(tmp_path))
    (tmp_path / "0badc0de-00000099-3.npz.tmp").write_bytes(b"partial")
    for index in range(3):
        replay.add(make_step(100 + index), worker=0)
    replay.save(tmp_path)
    second = set(os.listdir(tmp_path))
    assert not any(name.endswith(".tmp") for name in second)
    assert len(first & second) > 1  # complete chunks were kept, not rewritten
    assert_same(replay, Replay.from_directory(tmp_path))


def test_interrupted_save_keeps_previous_save(tmp_path, monkeypatch):
    replay = filled_replay()
    replay.save(tmp_path)
    before = Replay.from_directory(tmp_path)
    for index in range(20):
        replay.add(make_step(200 + index), worker=0)
    calls, savez_compressed = [], np.savez_compressed

    def fail_on_second_file(file, **arrays):
        calls.append(file)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return savez_compressed(file, **arrays)

    monkeypatch.setattr(np, "savez_compressed", fail_on_second_file)
    with pytest.raises(OSError, match="No space left"):
        replay.save(tmp_path)
    monkeypatch.undo()
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    assert_same(before, Replay.from_directory(tmp_path))


def test_corrupt_chunk_file_raises_naming_it(tmp_path):
    replay = filled_replay()
    replay.save(tmp_path)
    victim = sorted(p for p in tmp_path.iterdir() if p.suffix == ".npz")[1]
    victim.write_bytes(victim.read_bytes()[:100])
    target = Replay(40, chunk_size=8)
    fill(target, [12])
    with pytest.raises(CorruptReplayError, match=str(victim)):
        target.load(tmp_path)
    np.testing.assert_array_equal(
        target.stream(0)["reward"], np.arange(12)
    )  # unchanged
    with pytest.warns(UserWarning, match=str(victim)):
        salvaged = Replay(40, chunk_size=8).load(tmp_path, strict=False)
    lost = 40 - len(salvaged)
    assert 0 < lost <= 8  # only the unreadable chunk's steps are missing
    for worker in salvaged.workers:
        rewards = salvaged.stream(worker)["reward"]
        firsts = salvaged.stream(worker)["is_first"]
        gaps = np.flatnonzero(np.diff(rewards) != 2) + 1
        assert firsts[gaps].all()  # no sequence bridges the missing steps


def test_corrupt_or_missing_manifest(tmp_path):
    with pytest.raises(CorruptReplayError, match="replay.json is missing"):
        Replay(10).load(tmp_path)
    filled_replay().save(tmp_path)
    (tmp_path / "replay.json").write_text("{not json")
    with pytest.raises(CorruptReplayError, match="replay.json"):
        Replay.from_directory(tmp_path)


def test_load_checks_capacity_and_keys(tmp_path):
    filled_replay().save(tmp_path)
    with pytest.raises(
        ValueError, match="holds 40 steps, more than this replay's capacity 30"
    ):
        Replay(30).load(tmp_path)
    other = Replay(100)
    other.add(make_step(0, True, image_shape=(2, 2, 3)))
    with pytest.raises(ValueError, match="stores image uint8"):
        other.load(tmp_path)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        Replay(0)
    replay = Replay(5, chunk_size=2)
    fill(replay, [4])
    with pytest.raises(ValueError, match="longer than the replay capacity 5"):
        replay.sample(2, 6)
    with pytest.raises(ValueError, match="longest worker stream holds 4 steps"):
        replay.sample(2, 5)
    with pytest.raises(
        ValueError, match="'image' has dtype uint8 and shape \\(2, 2, 3\\)"
    ):
        replay.add(make_step(5, image_shape=(2, 2, 3)))
    with pytest.raises(ValueError, match="'image' has dtype float32"):
        replay.add({**make_step(5), "image": np.zeros((4, 4, 3), np.float32)})
    with pytest.raises(ValueError, match="missing \\['action'\\]"):
        replay.add({k: v for k, v in make_step(5).items() if k != "action"})
    with pytest.raises(ValueError, match="worker ids must be ints or strings"):
        replay.add(make_step(5), worker=1.5)
    with pytest.raises(ValueError, match="has no \\['reward'\\]"):
        Replay(5).add({k: v for k, v in make_step(0).items() if k != "reward"})
    with pytest.raises(ValueError, match="'action' must be a flat float32 vector"):
        Replay(5).add({**make_step(0), "action": np.float32(1)})
    replay.add({**make_step(5), "log/ignored": 3.0})  # log/ keys are not stored
    assert "log/ignored" not in replay.spec


def test_stats_report_size_episodes_memory():
    replay = Replay(100, chunk_size=10)
    assert replay.stats() == {
        "replay/size": 0,
        "replay/episodes": 0,
        "replay/bytes": 0,
        "replay/memory_gb": 0.0,
    }
    fill(replay, [4, 6, 5])
    stats = replay.stats()
    assert stats["replay/size"] == 15 and stats["replay/episodes"] == 3
    per_step = 4 * 4 * 3 + 3 * 4 + 4 + 3 + 8  # image, action, reward, flags, id
    assert stats["replay/memory_gb"] == pytest.approx(2 * 10 * per_step / 1e9)
    assert stats["replay/bytes"] == 2 * 10 * per_step
