"""`kd.data.Driver`: one acting loop for training and evaluation, with real
Catch envs in this process and in env processes, and its episode listeners."""

import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer.data import Driver
from keras_dreamer.data import Episode
from keras_dreamer.data import EpisodeStats
from keras_dreamer.envs import ProcessEnvs

CATCH = {"size": 16, "lives": 1}  # episodes of about 20 steps


def catch(**kwargs):
    return kd.envs.make("catch", **{**CATCH, **kwargs})


class Recorder:
    """Every step the driver records, per env, and every episode it pushes."""

    def __init__(self, driver):
        self.steps = {i: [] for i in range(len(driver))}
        self.episodes = []
        driver.on_step(lambda step, worker: self.steps[worker].append(step))
        driver.on_episode(self.episodes.append)


def episodes_from_steps(steps):
    """(score, length) of each finished episode, recounted from the steps."""
    found, score, length = [], 0.0, 0
    for step in steps:
        if step["is_first"]:
            score, length = 0.0, 0
        score += float(step["reward"])
        length += 1
        if step["is_last"]:
            found.append((score, length))
    return found


def test_episodes_match_the_recorded_steps():
    envs = [catch(), catch()]
    driver = Driver(envs, kd.data.RandomPolicy(envs[0].act_space, 0), seeds=[1, 2])
    record = Recorder(driver)
    for _ in range(80):
        assert driver.step() == 2
    assert driver.env_steps == 160
    for worker in range(2):
        pushed = [(e.score, e.length) for e in record.episodes if e.worker == worker]
        assert pushed and pushed == episodes_from_steps(record.steps[worker])
        for step in record.steps[worker]:
            assert step["action"].shape == (3,) and step["action"].sum() == 1.0
            assert not any(key.startswith("log/") for key in step)
    # Frames only for worker 0 by default, one per obs, as the env gave them.
    assert all(e.frames is None for e in record.episodes if e.worker == 1)
    first = next(e for e in record.episodes if e.worker == 0)
    np.testing.assert_array_equal(
        first.frames["image"],
        np.stack([s["image"] for s in record.steps[0][: first.length]]),
    )
    assert not first.cut


def test_video_frames_cap_and_max_steps_cut():
    env = catch(size=16, lives=1)
    driver = Driver(
        env,
        kd.data.RandomPolicy(env.act_space, 0),
        seeds=[0],
        video_frames=3,
        max_steps=4,
    )
    record = Recorder(driver)
    for _ in range(12):
        driver.step()
    # Catch ends after more than 4 steps: each episode is cut at its 5th obs,
    # and the env's further obs count for nothing until its next episode.
    assert record.episodes and all(e.cut and e.length == 5 for e in record.episodes)
    assert len(record.episodes) == 1
    assert record.episodes[0].frames["image"].shape == (3, 16, 16, 3)
    with pytest.raises(ValueError, match="max_steps"):
        Driver(env, driver.policy, max_steps=-1)


class CountingPolicy:
    """Action 0 everywhere; extras: a per-env call counter and a vector."""

    def __init__(self, count, extra_shape=None):
        self.calls = 0
        self.count = count
        self.extra_shape = extra_shape

    def __call__(self, obs):
        self.calls += 1
        return np.zeros(len(obs["is_first"]), np.int64)  # discrete indices

    def extras(self):
        shape = self.extra_shape or (self.count, 2)
        base = np.arange(shape[0], dtype=np.float32)[:, None] * 10 + self.calls
        return {"latent/x": np.broadcast_to(base, shape).copy()}


def test_extras_are_stored_with_each_step_per_env():
    envs = [catch(), catch(), catch()]
    driver = Driver(envs, CountingPolicy(3), seeds=[0, 1, 2])
    record = Recorder(driver)
    for _ in range(5):
        driver.step()
    for worker, steps in record.steps.items():
        values = [step["latent/x"].tolist() for step in steps]
        assert values == [[10.0 * worker + call] * 2 for call in range(1, 6)]
        assert all(step["action"].tolist() == [1.0, 0.0, 0.0] for step in steps)
    bad = Driver([catch(), catch()], CountingPolicy(2, extra_shape=(3, 2)))
    with pytest.raises(ValueError, match=r"extras\(\)\['latent/x'\].*\[2, \.\.\.\]"):
        bad.step()


def test_bad_actions_and_seeds_are_named():
    env = catch()
    with pytest.raises(ValueError, match=r"actions of shape \(1, 2\)"):
        Driver(env, lambda obs: np.zeros((1, 2))).step()
    with pytest.raises(ValueError, match="2 seeds for 1 env"):
        Driver(env, lambda obs: np.zeros(1, int), seeds=[0, 1])


def test_env_processes_give_the_in_process_episodes():
    policy = kd.data.RandomPolicy(catch().act_space, 7)
    serial = Driver([catch(), catch()], policy, seeds=[4, 5])
    expected = Recorder(serial)
    for _ in range(90):
        serial.step()
    with ProcessEnvs("catch", 2, env_kwargs=CATCH) as envs:
        parallel = Driver(envs, kd.data.RandomPolicy(envs.act_space, 7), seeds=[4, 5])
        record = Recorder(parallel)
        for _ in range(90):
            parallel.step()
        assert parallel.restarts == 0
    assert len(record.episodes) == len(expected.episodes) >= 4
    for got, want in zip(record.episodes, expected.episodes):
        assert (got.worker, got.score, got.length) == (
            want.worker,
            want.score,
            want.length,
        )
        if want.frames is not None:
            np.testing.assert_array_equal(got.frames["image"], want.frames["image"])


def test_episode_stats_means_and_latest_video():
    stats = EpisodeStats()
    frames = {"image": np.zeros((2, 4, 4, 3), np.uint8)}
    stats.add(Episode(0, 1.0, 10, {"log/a": 2.0}, frames))
    stats.add(Episode(1, 3.0, 20, {"log/a": 4.0, "log/b": 1.0}))
    assert stats.drain() == {
        "episode/count": 2.0,
        "episode/score": 2.0,
        "episode/length": 15.0,
        "episode/log/a": 3.0,
    }
    assert stats.drain() == {"episode/count": 0.0}
    assert stats.video()["image"].shape == (2, 4, 4, 3)  # kept across drains


def test_collector_pushes_pending_then_new_episodes():
    collector = kd.data.Collector(
        catch(), replay=kd.data.Replay(2000), batch_size=2, batch_length=8, seed=0
    )
    collector.collect(60)
    before = collector.episodes.pending()
    assert before
    got = []
    collector.add_episode_listener(got.append)
    assert got == before  # those finished before it listened come first
    collector.collect(60)
    assert len(got) > len(before)
    collector.remove_episode_listener(got.append)
    count = len(got)
    collector.collect(60)
    assert len(got) == count
    metrics = collector.drain_metrics(episodes=False)
    assert not any(key.startswith("episode/") for key in metrics)
    assert collector.drain_metrics()["episode/count"] == 0.0  # dropped above
