"""Collector and OfflineDataset: train-ratio accounting, metrics, fit."""

import keras
import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer.data import Collector
from keras_dreamer.data import OfflineDataset
from keras_dreamer.data import Replay
from keras_dreamer.envs import Catch
from keras_dreamer.spaces import Discrete


def catch(seed=0, **kwargs):
    return Catch(size=16, seed=seed, **kwargs)


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "envs, train_ratio, per_batch",
    [(1, 4, 8.0), (1, 3, 32 / 3), (3, 5, 32 / 5), (2, 64, 0.5)],
)
def test_train_ratio_accounting(envs, train_ratio, per_batch):
    collector = Collector(
        [catch(i) for i in range(envs)],
        replay=Replay(2000),
        batch_size=4,
        batch_length=8,
        train_ratio=train_ratio,
        prefill=60,
    )
    collector[0]
    prefilled = -(-60 // envs) * envs
    assert collector.env_steps == prefilled + int(per_batch // envs) * envs
    for batches in range(2, 12):
        collector[batches]
        expected = prefilled + per_batch * batches  # fractions carry over
        assert expected - envs < collector.env_steps <= expected
        assert collector.env_steps % envs == 0
    assert len(collector.replay) == collector.env_steps


@pytest.mark.backend_independent
def test_resumed_replay_needs_no_prefill(tmp_path):
    first = Collector(catch(), replay=Replay(500), batch_size=2, batch_length=8)
    first[0]
    first.replay.save(tmp_path)
    replay = Replay.from_directory(tmp_path)
    resumed = Collector(
        catch(), replay=replay, batch_size=2, batch_length=8, train_ratio=16
    )
    resumed[0]
    assert resumed.env_steps == 1  # 2 * 8 / 16 env steps for the batch, no prefill
    assert len(replay) == len(first.replay) + 1


@pytest.mark.backend_independent
def test_batches_follow_the_batch_format():
    collector = Collector(
        catch(), replay=Replay(500), batch_size=3, batch_length=10, seed=0
    )
    batch = collector[0]
    spec = collector.batch_spec
    assert set(batch) == set(spec)
    for key, array in batch.items():
        assert (array.shape, array.dtype) == spec[key], key
    assert spec["image"] == ((3, 10, 16, 16, 3), np.uint8)
    np.testing.assert_array_equal(batch["action"].sum(-1), 1)  # one-hot
    assert collector.obs_space == catch().obs_space and collector.act_space == Discrete(
        3
    )


def ball_side(obs):
    """A policy that is a function of the image: move toward the ball's side."""
    images = np.asarray(obs["image"], np.int32)
    ball = (images[..., 0] > 200) & (images[..., 2] < 100)
    columns = np.arange(images.shape[2])
    weight = ball.sum((1, 2))
    mean = (ball.sum(1) * columns).sum(-1) / np.maximum(weight, 1)
    return np.where(weight == 0, 0, np.where(mean < images.shape[2] / 2, 1, 2))


@pytest.mark.backend_independent
def test_replay_pairs_each_obs_with_the_action_taken_at_it():
    collector = Collector(
        [catch(0), catch(1)],
        replay=Replay(1000),
        policy=ball_side,
        batch_size=8,
        batch_length=16,
    )
    batch = collector[0]
    chosen = np.stack([ball_side({"image": images}) for images in batch["image"]])
    np.testing.assert_array_equal(batch["action"].argmax(-1), chosen)


@pytest.mark.backend_independent
def test_deterministic_given_a_seed():
    batches = [
        Collector(catch(seed=None), batch_size=2, batch_length=8, seed=5)[0]
        for _ in range(2)
    ]
    for key in batches[0]:
        np.testing.assert_array_equal(batches[0][key], batches[1][key])


@pytest.mark.backend_independent
def test_drain_metrics_counts_episodes():
    collector = Collector(
        catch(lives=1),
        replay=Replay(3000),
        batch_size=4,
        batch_length=8,
        prefill=500,
        seed=1,
    )
    collector[0]
    metrics = collector.drain_metrics()
    streams = collector.replay.stream(0)
    ends = np.flatnonzero(streams["is_last"])
    assert metrics["episode/count"] == len(ends) > 2
    starts = np.flatnonzero(streams["is_first"])
    lengths = [end - start + 1 for start, end in zip(starts, ends)]
    scores = [streams["reward"][s : e + 1].sum() for s, e in zip(starts, ends)]
    assert metrics["episode/length"] == pytest.approx(np.mean(lengths))
    assert metrics["episode/score"] == pytest.approx(np.mean(scores))
    assert metrics["env/steps"] == collector.env_steps == metrics["replay/size"]
    assert metrics["fps/env"] > 0 and metrics["replay/episodes"] == len(starts)
    assert metrics["replay/memory_gb"] > 0
    again = collector.drain_metrics()
    assert again["episode/count"] == 0 and "episode/score" not in again
    assert again["env/steps"] == metrics["env/steps"]


@pytest.mark.backend_independent
def test_log_keys_are_reported_per_episode_not_stored():
    class Logged(Catch):
        def _observe(self):
            return {**super()._observe(), "log/lives": np.int32(self._lives_left)}

    collector = Collector(
        Logged(size=16, lives=2, seed=0),
        replay=Replay(1000),
        batch_size=2,
        batch_length=8,
        prefill=300,
    )
    collector[0]
    metrics = collector.drain_metrics()
    assert metrics["episode/log/lives"] == 0.0  # the value at each episode's end
    assert not any(key.startswith("log/") for key in collector.replay.spec)


class TinyModel(keras.Model):
    """Predicts the reward from the mean image colour and the action."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, batch):
        image = keras.ops.cast(batch["image"], "float32") / 255.0
        features = keras.ops.concatenate(
            [keras.ops.mean(image, axis=(2, 3)), batch["action"]], -1
        )
        return self.dense(features)[..., 0]

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        return keras.ops.mean(keras.ops.square(y_pred - x["reward"]))


def test_collector_feeds_fit(backend):
    collector = Collector(
        [catch(0), catch(1)],
        replay=Replay(1000),
        batch_size=4,
        batch_length=8,
        train_ratio=16,
        seed=0,
    )
    model = TinyModel()
    model.compile(optimizer="adam")
    history = model.fit(
        collector, steps_per_epoch=3, epochs=2, shuffle=False, verbose=0
    )
    assert (
        len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    )
    # Prefill, then 2 env steps per batch (4*8/16); TF samples two extra batches.
    extra = 2 if backend == "tensorflow" else 0
    assert collector.env_steps >= 32 + 2 * (6 + extra)
    metrics = collector.drain_metrics()
    assert metrics["env/steps"] == collector.env_steps


def test_offline_dataset_from_saved_collector_replay(tmp_path):
    collector = Collector(
        catch(), replay=Replay(600), batch_size=2, batch_length=8, seed=0
    )
    collector[0]
    collector.replay.save(tmp_path)
    data = OfflineDataset(tmp_path, batch_size=3, batch_length=8, seed=0)
    assert (
        data.obs_space == collector.obs_space and data.act_space == collector.act_space
    )
    batch = data[0]
    assert batch["image"].shape == (3, 8, 16, 16, 3)
    assert data.drain_metrics()["replay/size"] == len(collector.replay)
    model = TinyModel()
    model.compile(optimizer="adam")
    model.fit(data, steps_per_epoch=2, epochs=1, shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="batch_length 5000 is longer"):
        OfflineDataset(tmp_path, batch_size=3, batch_length=5000)


@pytest.mark.backend_independent
def test_offline_dataset_infers_spaces_without_metadata(tmp_path):
    replay = Replay(100)
    for t in range(20):
        replay.add(
            {
                "image": np.zeros((4, 4, 1), np.uint8),
                "action": np.eye(2, dtype=np.float32)[t % 2],
                "reward": 0.0,
                "is_first": t == 0,
                "is_last": False,
                "is_terminal": False,
            }
        )
    replay.save(tmp_path)
    data = OfflineDataset(tmp_path, 2, 4)
    assert data.act_space == Discrete(2)
    assert data.obs_space["image"].is_image


@pytest.mark.backend_independent
def test_bad_input_errors():
    with pytest.raises(
        ValueError, match="capacity 20 is smaller than one sequence per env"
    ):
        Collector([catch(0), catch(1)], replay=Replay(20), batch_length=16)
    with pytest.raises(ValueError, match="use_multiprocessing"):
        Collector(catch(), replay=Replay(100), batch_length=8, use_multiprocessing=True)
    with pytest.raises(ValueError, match="train_ratio must be a number > 0"):
        Collector(catch(), replay=Replay(100), batch_length=8, train_ratio=0)
    with pytest.raises(ValueError, match="All envs must match"):
        Collector([catch(), Catch(size=32)], replay=Replay(100), batch_length=8)
    bad_policy = Collector(
        catch(), replay=Replay(100), batch_length=8, policy=lambda obs: [[0.5, 0.5, 0]]
    )
    with pytest.raises(ValueError, match="policy returned an invalid action.*one-hot"):
        bad_policy[0]
    wrong_shape = Collector(
        catch(), replay=Replay(100), batch_length=8, policy=lambda obs: np.zeros((1, 4))
    )
    with pytest.raises(
        ValueError, match=r"shape \(1, 4\); expected \(1, 3\) or \(1,\)"
    ):
        wrong_shape[0]


@pytest.mark.backend_independent
def test_env_names():
    collector = Collector("default", replay=Replay(200), batch_size=2, batch_length=4)
    assert collector[0]["image"].shape == (2, 4, 64, 64, 3)


class Drift(kd.envs.Env):
    """A point pushed by a 2x2 Box action; the reward is minus the effort."""

    def __init__(self):
        self.obs_space = {"image": kd.Box((8, 8, 1), 0, 255, "uint8")}
        self.act_space = kd.Box((2, 2), -1, 1)
        self._pos = np.zeros(2)
        self._t = 0

    def _reset(self, seed):
        self._pos, self._t = np.full(2, 3.5), 0
        return self._observe()

    def _step(self, action):
        self._pos = np.clip(self._pos + action.sum(0), 0, 7)
        self._t += 1
        return self._observe(), -float(np.abs(action).sum()), False, self._t == 10

    def _observe(self):
        image = np.zeros((8, 8, 1), np.uint8)
        image[int(self._pos[0]), int(self._pos[1])] = 255
        return {"image": image}


@pytest.mark.backend_independent
def test_box_actions_in_batch_format():
    policy = kd.data.RandomPolicy(kd.Box((2, 2), -1, 1), seed=0)
    assert policy({"is_first": np.zeros(5, bool)}).shape == (5, 4)
    collector = Collector([Drift(), Drift()], replay=Replay(200), batch_length=4)
    batch = collector[0]
    assert batch["action"].shape == (16, 4, 4) and np.abs(batch["action"]).max() <= 1
    # The reward on arriving at obs t+1 pays for the action taken at obs t.
    effort = -np.abs(batch["action"][:, :-1]).sum(-1)
    follows = ~batch["is_first"][:, 1:]
    np.testing.assert_allclose(batch["reward"][:, 1:][follows], effort[follows], 1e-5)
    shaped = Collector(
        Drift(), replay=Replay(50), batch_length=4, policy=lambda o: np.zeros((1, 2, 2))
    )
    assert shaped[0]["action"].shape == (16, 4, 4)
    too_big = Collector(
        Drift(), replay=Replay(50), batch_length=4, policy=lambda o: np.full((1, 4), 2)
    )
    with pytest.raises(ValueError, match="invalid action.*outside the bounds"):
        too_big[0]
