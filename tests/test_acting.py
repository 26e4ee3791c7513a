"""Acting around training: the latest-episode video, evaluation episodes, and
the agent's state through checkpoints, with real envs and a real agent."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

import keras_dreamer as kd
from keras_dreamer import checkpoint
from tests.helpers import SMALL_MODEL
from tests.helpers import read_events
from tests.helpers import read_jsonl
from tests.helpers import to_numpy


def small_env(max_steps=12, seed=None):
    return kd.envs.make("default", size=16, max_steps=max_steps, seed=seed)


def test_collector_keeps_the_latest_episode_of_env_0():
    env = small_env(max_steps=6)
    collector = kd.data.Collector(
        [env, small_env(max_steps=9)],
        batch_size=2,
        batch_length=4,
        prefill=0,
        seed=0,
        episode_video_frames=5,
    )
    assert collector.episode_video() is None
    collector.collect(2 * 8)  # env 0's first episode: 7 obs, cut to 5 frames
    video = collector.episode_video()
    assert sorted(video) == ["image"]
    assert video["image"].shape == (5, 16, 16, 3) and video["image"].dtype == np.uint8
    # The frames are the episode's first obs, as stored in the replay.
    stored = collector.replay.sample(1, 4)  # any sequence: check a real frame
    assert stored["image"].dtype == np.uint8
    uncapped = kd.data.Collector(small_env(max_steps=6), prefill=0, seed=0)
    uncapped.collect(7)
    assert uncapped.episode_video()["image"].shape[0] == 7
    with pytest.raises(ValueError, match="episode_video_frames"):
        kd.data.Collector(small_env(), episode_video_frames=-1)


def test_evaluator_plays_whole_episodes_and_caps_endless_ones():
    env = small_env(max_steps=10)
    evaluate = kd.data.Evaluator(
        env, kd.data.RandomPolicy(env.act_space, 0), episodes=3, seed=1
    )
    metrics = evaluate()
    assert metrics["eval/episode/length"] <= 11 and metrics["eval/episode/cut"] == 0
    # Catch gives no reward before the ball lands: an episode cut short.
    endless = kd.data.Evaluator(
        small_env(max_steps=1000),
        kd.data.RandomPolicy(env.act_space, 0),
        max_steps=4,
    )
    metrics = endless()
    assert metrics["eval/episode/length"] == 5 and metrics["eval/episode/cut"] == 1.0
    with pytest.raises(ValueError, match="episodes"):
        kd.data.Evaluator(env, evaluate.policy, episodes=0)


def test_agent_run_logs_episode_video_and_eval(tmp_path):
    env = small_env(max_steps=8, seed=0)
    agent = kd.Agent(env.obs_space, env.act_space, seed=0, **SMALL_MODEL)
    agent.compile(optimizer=kd.optimizers.LaProp(learning_rate=1e-3, warmup=0))
    collector = kd.data.Collector(
        env,
        policy=agent.policy,
        batch_size=2,
        batch_length=8,
        train_ratio=4,
        seed=0,
        episode_video_frames=6,
    )
    policy = agent.make_policy("eval", seed=0)
    evaluator = kd.data.Evaluator(small_env(max_steps=8), policy, episodes=1, seed=5)
    callback = kd.DreamerReportCallback(
        tmp_path,
        outputs=("jsonl", "tensorboard"),
        log_every=2,
        report_every=4,
        report_data=lambda: collector.replay.sample(2, 8),
        train_data=collector,
        usage=False,
        evaluator=evaluator,
        eval_every=2,
    )
    collector.prefill_replay()
    agent.fit(collector, epochs=2, steps_per_epoch=2, callbacks=[callback], verbose=0)
    media = sorted(os.listdir(tmp_path / "media"))
    episodes = [name for name in media if name.startswith("episode_policy_image_")]
    assert episodes, media
    with Image.open(tmp_path / "media" / episodes[-1]) as gif:
        assert gif.size == (16, 16)
        assert gif.n_frames == 6
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    evals = [line for line in lines if "eval/episode/score" in line]
    assert [line["step"] for line in evals] == [2, 4]
    assert all(1 <= line["eval/episode/length"] <= 9 for line in evals)
    assert any("train/loss/policy" in line for line in lines)
    events = read_events(tmp_path)
    assert "episode/policy_image" in events.Tags()["images"]
    assert [s.step for s in events.Scalars("eval/episode/score")] == [2, 4]


def test_evaluator_without_a_schedule_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="eval_every"):
        kd.DreamerReportCallback(tmp_path, evaluator=lambda: {}, report_data=None)


def test_checkpoint_covers_the_agent_state(tmp_path):
    env = small_env(seed=0)
    agent = kd.Agent(env.obs_space, env.act_space, seed=0, **SMALL_MODEL)
    agent.compile()
    collector = kd.data.Collector(
        env, policy=agent.policy, batch_size=2, batch_length=8, train_ratio=8, seed=0
    )
    agent.fit(collector, epochs=1, steps_per_epoch=1, verbose=0)
    extra = [*agent.critic.slow_weights(), *agent.retnorm.variables]
    assert agent.critic.slow_weights() and agent.retnorm.variables
    rng = np.random.default_rng(0)
    for variable in extra:  # values no fresh agent has
        if "float" in str(variable.dtype):
            variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
    path = checkpoint.save(tmp_path, agent, step=1)

    def state(model):  # every variable but the seed states (saved apart)
        kept = [v for v in model.variables if "seed_generator" not in v.path]
        return [v.path.split("/", 1)[-1] for v in kept], to_numpy(
            [v.value for v in kept]
        )

    names, before = state(agent)

    other = kd.Agent(env.obs_space, env.act_space, seed=1, **SMALL_MODEL)
    other.compile()
    checkpoint.restore(path, other)
    _, after = state(other)
    assert len(after) == len(before)
    for name, a, b in zip(names, before, after):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # The critic's slow copy and the normaliser's statistics came back too.
    for variable, other_variable in zip(
        extra, [*other.critic.slow_weights(), *other.retnorm.variables]
    ):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(variable),
            keras.ops.convert_to_numpy(other_variable),
        )
    assert int(keras.ops.convert_to_numpy(other.optimizer.iterations)) == 1
