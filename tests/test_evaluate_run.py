"""`keras-dreamer eval` and `kd.train.load_policy` on a real short run."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from tests.test_train_cli import DEBUG
from tests.test_train_cli import debug_run  # noqa: F401 (the trained run)
from tests.test_train_cli import run


def evaluate(*args):
    return run([sys.executable, "-m", "keras_dreamer.cli", "eval", *map(str, args)])


def snapshot(logdir):
    """Size, mtime and bytes of every file of a run, its eval/ folder aside."""
    files = {}
    for root, dirs, names in os.walk(logdir):
        dirs[:] = [d for d in dirs if os.path.join(root, d) != str(logdir / "eval")]
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                files[path] = (os.stat(path).st_mtime_ns, file.read())
    return files


def copy_run(logdir, tmp_path, extra_gin=""):
    copy = tmp_path / "run"
    shutil.copytree(logdir, copy, ignore=shutil.ignore_patterns("eval", "wandb"))
    with open(copy / "config.gin", "a") as file:
        file.write("\n" + extra_gin + "\n")
    return copy


def test_eval_plays_episodes_and_touches_nothing_else(debug_run):  # noqa: F811
    logdir, trained = debug_run
    assert trained.returncode == 0, trained.stderr[-3000:]
    before = snapshot(logdir)
    result = evaluate("--logdir", logdir, "--episodes", 3, "--video")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [
        f"episode {i}" for i in range(3)
    ]
    assert lines[-1].startswith("step 8: mean score ")
    folder = logdir / "eval" / "8"
    with open(folder / "episodes.jsonl") as file:
        episodes = [json.loads(line) for line in file]
    assert [e["episode"] for e in episodes] == [0, 1, 2]
    assert all(e["step"] == 8 and 2 <= e["length"] <= 11 for e in episodes)
    for index, episode in enumerate(episodes):
        with Image.open(folder / f"episode_{index}.gif") as gif:
            assert gif.size == (16, 16)
            assert 2 <= gif.n_frames <= episode["length"]
    assert snapshot(logdir) == before


def test_eval_of_an_older_checkpoint_in_env_processes(debug_run, tmp_path):  # noqa: F811
    from keras_dreamer.train import evaluation

    copy = copy_run(debug_run[0], tmp_path, "train.envs = 2")
    result = evaluation.evaluate_run(copy, episodes=3, step=4, seed=1)
    assert result["step"] == 4 and len(result["scores"]) == 3
    assert result["directory"] == os.path.join(copy, "eval", "4")
    assert sorted(os.listdir(result["directory"])) == ["episodes.jsonl"]
    assert np.isclose(result["mean"], np.mean(result["scores"]))


def test_a_cut_episode_restarts_its_envs(debug_run, tmp_path):  # noqa: F811
    from keras_dreamer.train import evaluation

    copy = copy_run(debug_run[0], tmp_path, "train.envs = 2")
    result = evaluation.evaluate_run(copy, episodes=3, max_steps=3)
    assert result["lengths"] == [4, 4, 4]
    with open(os.path.join(result["directory"], "episodes.jsonl")) as file:
        assert [json.loads(line)["cut"] for line in file] == [True] * 3


def test_load_policy_acts_like_the_agents_policy(debug_run):  # noqa: F811
    import keras_dreamer as kd

    policy = kd.train.load_policy(debug_run[0], mode="train")
    assert isinstance(policy, kd.AgentPolicy) and policy.checkpoint_step == 8
    env = kd.envs.make("default", size=16, seed=0)
    obs = {k: np.asarray(v)[None] for k, v in env.reset(seed=0).items()}
    actions = np.asarray(policy(obs))
    assert actions.shape == (1, 3) and actions.sum() == 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--checkpoint", 5],
            "no checkpoint of step 5 in '{run}'; there are steps 4, 8.",
        ),
        (["--episodes", 0], "episodes must be an int >= 1, got 0."),
    ],
)
def test_bad_eval_arguments_exit_2_with_one_line(debug_run, args, message):  # noqa: F811
    logdir = debug_run[0]
    result = evaluate("--logdir", logdir, *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "keras-dreamer eval: error: " + message.format(run=logdir)
    ]


def test_a_run_that_is_not_an_agent_checkpoint_exits_2(debug_run, tmp_path):  # noqa: F811
    missing = evaluate("--logdir", tmp_path / "nothing")
    empty = evaluate("--logdir", tmp_path)
    other = evaluate(
        "--logdir", copy_run(debug_run[0], tmp_path, "make_world_model.deter = 16")
    )
    for result, words in (
        (missing, "no run directory"),
        (empty, "no checkpoint in"),
        (other, "holds another model than the agent its config.gin builds"),
    ):
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("keras-dreamer eval: error: ") and words in line, line


def test_a_world_model_run_has_no_policy(tmp_path):
    logdir = tmp_path / "world_model"
    trained = run(
        [
            sys.executable,
            "-m",
            "keras_dreamer.cli",
            "train",
            "--logdir",
            str(logdir),
            "--gin_file",
            DEBUG,
            "--gin_param",
            "train.agent = False",
            "--gin_param",
            "train.steps = 2",
            "--gin_param",
            "train.save_every = 2",
            "--gin_param",
            "train.report_every = None",
            "--gin_param",
            "train.eval_every = None",
        ]
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = evaluate("--logdir", logdir)
    assert result.returncode == 2
    assert "trained a world model only (train.agent=False): there is no policy" in (
        result.stderr
    )
    assert not os.path.exists(logdir / "eval")
