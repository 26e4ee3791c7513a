"""The training command end to end, in subprocesses, on the current backend."""

import ast
import glob
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import pytest
from PIL import Image

from keras_dreamer.logger.video import mp4_available
from tests.helpers import REQUIRE_ALL
from tests.helpers import decode_video
from tests.helpers import once_per_session
from tests.helpers import read_events
from tests.helpers import read_jsonl
from tests.helpers import read_wandb_run
from tests.helpers import require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()
DEBUG = os.path.join("gin_configs", "debug.gin")
# Episodes end within the short debug runs, so scores.jsonl gets lines.
SHORT_EPISODES = "make_env.max_steps = 10"
# The debug run also logs to MLflow where it is installed (always in CI).
MLFLOW = REQUIRE_ALL or importlib.util.find_spec("mlflow") is not None
# TensorFlow's native start-up notices, which the command keeps off stderr.
NOTICES = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "rebuild TensorFlow")


def command(*args, module=False):
    if module:
        return [sys.executable, "-m", "keras_dreamer.train", *args]
    return [sys.executable, "-m", "keras_dreamer.cli", "train", *args]


def environment(**extra):
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": BACKEND}
    env.update(extra)
    return env


def run(args, timeout=300, **kwargs):
    return subprocess.run(
        args,
        cwd=REPO,
        env=environment(**kwargs.pop("env", {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def bindings(text):
    """`{name: value}` of the `name = literal` lines of a gin file."""
    found = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            found[key] = ast.literal_eval(value)
    return found


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    def train(logdir):
        args = command(
            "--logdir",
            str(logdir),
            "--gin_file",
            DEBUG,
            "--gin_param",
            SHORT_EPISODES,
            "--gin_param",
            "train.outputs = ('terminal', 'jsonl', 'scores', 'tensorboard', 'wandb'"
            + (", 'mlflow')" if MLFLOW else ")"),
            "--gin_param",
            "make_world_model.loss_scales = {'rep': 0.2}",
            "--gin_param",
            "train.verbose = 'auto'",  # stdout is a pipe: plain lines
        )
        env = {"WANDB_MODE": "offline", "MLFLOW_TRACKING_URI": ""}
        result = run(args, env=env)
        return {
            "args": args,
            "returncode": result.returncode,
            "stdout": result.stdout,
            "stderr": result.stderr,
        }

    logdir, result = once_per_session(tmp_path_factory, "debug_run", train)
    return logdir, subprocess.CompletedProcess(**result)


def test_debug_run_writes_the_whole_logdir(debug_run):
    logdir, result = debug_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Trained 8 steps" in result.stdout
    assert f"tensorboard --logdir {logdir}" in result.stdout
    # A speed choice made for this machine at run time is said once.
    said = result.stderr.count("convolution kernel gradients")
    assert said == (1 if BACKEND == "jax" else 0), result.stderr[-3000:]
    for name in ("config.gin", "metrics.jsonl", "scores.jsonl"):
        assert os.path.isfile(logdir / name), name
    assert glob.glob(str(logdir / "events.out.tfevents.*"))
    # Env 0 finishes an episode during the prefill: every report has its video.
    assert sorted(os.listdir(logdir / "media")) == [
        f"{key}_{step}.gif"
        for key in ("episode_policy_image", "report_openloop_image")
        for step in (0, 4, 8)
    ]
    with Image.open(logdir / "media" / "episode_policy_image_8.gif") as gif:
        assert gif.size == (16, 16) and 2 <= gif.n_frames <= 11
    assert glob.glob(str(logdir / "wandb" / "offline-run-*"))
    assert os.path.isdir(logdir / "ckpt" / "replay")
    checkpoints = sorted(n for n in os.listdir(logdir / "ckpt") if n.isdigit())
    assert checkpoints == ["0000000004", "0000000008"]
    # The run state holds what a resume needs besides the weights.
    with open(logdir / "ckpt" / "0000000008" / "state.json") as file:
        state = json.load(file)
    assert state["model"] == "agent" and "state" in state["policy_rng"]
    assert state["obs_space"]["image"]["shape"] == [16, 16, 3]
    assert state["act_space"] == {"class_name": "Discrete", "n": 3}
    lines = read_jsonl(logdir / "metrics.jsonl")
    assert [line["step"] for line in lines] == [0, 2, 4, 6, 8]
    assert "train/loss/image" in lines[1] and "report/openloop/image" not in lines[2]
    # debug.gin trains the agent and evaluates it every 4 steps.
    for key in ("loss/policy", "loss/value", "loss/repval", "ret", "ent/action"):
        assert f"train/{key}" in lines[1], key
    evals = [line for line in lines if "eval/episode/score" in line]
    assert [line["step"] for line in evals] == [4, 8]
    assert all(2 <= line["eval/episode/length"] <= 11 for line in evals)
    assert any("episode/score" in line for line in lines)
    scores = read_jsonl(logdir / "scores.jsonl")
    assert scores and all(
        set(s) <= {"step", "episode/score", "episode/length"} for s in scores
    )
    with Image.open(logdir / "media" / "report_openloop_image_8.gif") as gif:
        assert gif.n_frames == 8 + 10
        assert gif.size == (2 * (16 + 4), 3 * 16 + 4)


def test_gin_params_take_effect_and_are_recorded(debug_run):
    logdir, _ = debug_run
    config = (logdir / "config.gin").read_text()
    assert "make_env.max_steps = 10" in config
    assert "make_world_model.loss_scales = {'rep': 0.2}" in config
    assert "make_world_model.preset = 'debug'" in config
    assert "train.steps = 8" in config
    assert "'wandb'" in config


def test_a_piped_stdout_gets_one_plain_line_per_log_interval(debug_run):
    _, result = debug_run
    assert "\r" not in result.stdout and "\x1b" not in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    # debug.gin: 8 steps, log_every 2.
    steps = [int(re.match(r"step (\d+)/8 \(\d+%\) \| ", line)[1]) for line in lines]
    assert steps == [2, 4, 6, 8], result.stdout[-3000:]
    assert all(re.search(r"\| loss [-\d.e+]+ \| [\d.e+]+ steps/s \|", x) for x in lines)


def test_stderr_has_no_native_library_notices(debug_run):
    _, result = debug_run
    noisy = [x for x in result.stderr.splitlines() if any(n in x for n in NOTICES)]
    assert not noisy, result.stderr[-3000:]


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_notices_only_with_verbose(tmp_path, verbose):
    require("tensorflow")
    # A bad binding stops the command right after it imported Keras (and so
    # TensorFlow), which prints the notices.
    args = ["--backend", "tensorflow", "--gin_param", "train.stepz = 3"]
    result = run(
        command("--logdir", str(tmp_path), *args, *(["--verbose"] if verbose else []))
    )
    assert result.returncode == 2, result.stderr[-3000:]
    noisy = [x for x in result.stderr.splitlines() if any(n in x for n in NOTICES)]
    assert bool(noisy) == verbose, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "keras-dreamer" in line]
    assert len(errors) == 1 and "train.stepz" in errors[0], result.stderr[-3000:]


def test_the_mlflow_run_holds_metrics_params_and_videos(debug_run, tmp_path):
    require("mlflow")
    from mlflow.tracking import MlflowClient

    logdir, _ = debug_run
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file://{logdir}/mlruns")
    experiment = client.get_experiment_by_name("keras-dreamer")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == logdir.name
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [2, 4, 6, 8]
    lines = read_jsonl(logdir / "metrics.jsonl")
    assert history[-1].value == pytest.approx(lines[-1]["train/loss"])
    params = run.data.params
    assert params["train.steps"] == "8" and params["make_env.max_steps"] == "10"
    assert params["make_world_model.loss_scales"] == "{'rep': 0.2}"
    media = {a.path for a in client.list_artifacts(run.info.run_id, "media")}
    suffix = ".mp4" if mp4_available() else ".gif"  # MP4 with the video extra
    assert {f"media/report_openloop_image_{s}{suffix}" for s in (0, 4, 8)} <= media
    path = client.download_artifacts(
        run.info.run_id, f"media/report_openloop_image_8{suffix}", str(tmp_path)
    )
    assert len(decode_video(path)) == 8 + 10


def test_an_unreachable_mlflow_server_exits_2_with_one_line(tmp_path):
    require("mlflow")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    args = ["--gin_file", DEBUG, "--gin_param", "train.outputs = ('jsonl', 'mlflow')"]
    result = run(
        command("--logdir", str(tmp_path), *args), env={"MLFLOW_TRACKING_URI": uri}
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [x for x in result.stderr.splitlines() if "keras-dreamer train" in x]
    assert len(errors) == 1 and "output 'mlflow'" in errors[0], result.stderr[-3000:]
    assert f"cannot reach the MLflow tracking server at {uri}" in errors[0]
    assert "Traceback" not in result.stderr
    assert not glob.glob(str(tmp_path / "ckpt" / "0*"))  # refused before any step


def test_killed_run_resumes_without_duplicates(tmp_path):
    args = command(
        "--logdir",
        str(tmp_path),
        "--gin_file",
        DEBUG,
        "--gin_param",
        "train.steps = 40",
        "--gin_param",
        SHORT_EPISODES,
    )
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    target = tmp_path / "ckpt" / "0000000012"
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_jsonl(tmp_path / "metrics.jsonl", killed=True)
    killed_at = max(line["step"] for line in before)
    assert 12 <= killed_at < 40
    checkpoint = max(int(n) for n in os.listdir(tmp_path / "ckpt") if n.isdigit())

    result = run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "now at step 40" in result.stdout
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    steps = [line["step"] for line in lines]
    assert steps == sorted(set(steps)), "duplicate or unordered steps"
    assert steps[-1] == 40 and "train/loss" in lines[-1]
    resumed = [line for line in lines if line["step"] > checkpoint]
    assert resumed and all("train/loss" in line for line in resumed)
    scores = read_jsonl(tmp_path / "scores.jsonl")
    assert [s["step"] for s in scores] == sorted({s["step"] for s in scores})
    events = read_events(tmp_path)
    tb_steps = [s.step for s in events.Scalars("train/loss")]
    assert tb_steps == sorted(set(tb_steps)) and tb_steps[-1] == 40


def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    require("wandb")
    logdir = tmp_path / "run"

    def train(steps):
        result = run(
            command(
                "--logdir",
                str(logdir),
                "--gin_file",
                DEBUG,
                "--gin_param",
                f"train.steps = {steps}",
                "--gin_param",
                "train.outputs = ('jsonl', 'wandb')",
                "--gin_param",
                "train.report_every = None",
                "--gin_param",
                "train.eval_every = None",
            ),
            env={"WANDB_MODE": "offline"},
        )
        assert result.returncode == 0, result.stderr[-3000:]

    train(4)
    with open(logdir / "wandb" / "keras_dreamer_run_id") as file:
        run_id = file.read().strip()
    train(8)  # resumes from the checkpoint at step 4
    runs = sorted(glob.glob(str(logdir / "wandb" / "offline-run-*")))
    assert len(runs) == 2 and all(r.endswith("-" + run_id) for r in runs)
    (first_id, first), (second_id, second) = map(read_wandb_run, runs)
    assert first_id == second_id == run_id
    assert first == [2, 4] and second == [6, 8]


def test_checkpoint_of_the_other_model_kind_exits_2(tmp_path):
    # A world-model-only run (random policy, no agent keys) ...
    args = ("--logdir", str(tmp_path), "--gin_file", DEBUG, "--gin_param")
    result = run(
        command(*args, "train.agent = False", "--gin_param", "train.steps = 4")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert "train/loss/image" in lines[-1] and "train/loss/policy" not in lines[-1]
    assert any("eval/episode/score" in line for line in lines)
    # ... cannot be resumed as an agent run, and the logdir is left as it was.
    result = run(command(*args, "train.steps = 8"))
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "keras-dreamer" in line]
    assert len(errors) == 1 and "train.agent" in errors[0], result.stderr[-3000:]
    assert read_jsonl(tmp_path / "metrics.jsonl") == lines
    # Nor with an env whose observations differ: the error names the key.
    result = run(
        command(*args, "train.agent = False", "--gin_param", "make_env.size = 32")
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "keras-dreamer" in line]
    assert len(errors) == 1 and "observation 'image'" in errors[0], errors
    assert read_jsonl(tmp_path / "metrics.jsonl") == lines


def test_bare_command_runs_the_default_config(tmp_path):
    # Keras's smoke-test variables cap fit at one step of one epoch.
    result = run(
        command("--logdir", str(tmp_path), module=True),
        env={"KERAS_MAX_EPOCHS": "1", "KERAS_MAX_STEPS_PER_EPOCH": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = bindings((tmp_path / "config.gin").read_text())
    default = bindings(open(os.path.join(REPO, "gin_configs", "default.gin")).read())
    assert default and all(config[key] == value for key, value in default.items())
    assert "Trained 1 steps" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gin_param", "train.stepz = 3"], "train.stepz"),
        (["--gin_param", "make_envv.size = 3"], "make_envv"),
        (["--gin_file", "nonexistent.gin"], "nonexistent.gin"),
        (
            [
                "--gin_param",
                "make_world_model.obs_space_check = {'image': (64, 64, 3)}",
            ],
            "does not match",
        ),
        (["--gin_param", "make_env.name = 'pacman'"], "pacman"),
        (["--gin_param", "make_world_model.preset = 'size7m'"], "size7m"),
        (["--gin_param", "train.eval_episodes = 0"], "train.eval_episodes"),
        (["--gin_param", "train.env_standby = -1"], "train.env_standby"),
        (["--gin_param", "make_agent.imag_length = 0"], "imag_length"),
        (["--gin_param", "make_agent.loss_scales = {'polcy': 1.0}"], "'polcy'"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(tmp_path, args, message):
    result = run(command("--logdir", str(tmp_path / "run"), "--gin_file", DEBUG, *args))
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "keras-dreamer" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.backend_independent
def test_bad_logdir_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for logdir, message in [
        (blocker, "not a directory"),
        (blocker / "sub", "Cannot create"),
    ]:
        result = run(command("--logdir", str(logdir), "--gin_file", DEBUG))
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.backend_independent
def test_missing_backend_names_the_extra(tmp_path):
    other = "tensorflow" if BACKEND == "jax" else "jax"
    code = (
        f"import sys; sys.modules[{other!r}] = None\n"
        "from keras_dreamer import cli\n"
        f"argv = ['train', '--logdir', {str(tmp_path)!r}, '--backend', {other!r}]\n"
        "sys.exit(cli.main(argv))"
    )
    result = run([sys.executable, "-c", code])
    assert result.returncode == 2
    assert f"pip install 'keras-dreamer[{other}]'" in result.stderr


@pytest.mark.backend_independent
def test_usage_errors_exit_2(tmp_path):
    result = run([sys.executable, "-m", "keras_dreamer.cli", "train"])
    assert result.returncode == 2 and "--logdir" in result.stderr
    command = [sys.executable, "-m", "keras_dreamer.cli", "train"]
    command += ["--logdir", str(tmp_path / "run"), "--backend", "mxnet"]
    result = run(command)
    assert result.returncode == 2 and "invalid choice" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.backend_independent
def test_an_installed_wheel_finds_its_gin_configs(tmp_path):
    import zipfile

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path),
            REPO,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = glob.glob(str(tmp_path / "keras_dreamer-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = (
        "from keras_dreamer import cli\n"
        "print(cli.resolve_gin_file('debug.gin'))\n"
        "print(cli.resolve_gin_file('default'))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr[-2000:]
    paths = found.stdout.split()
    assert all(path.startswith(str(site)) for path in paths), paths
    assert (
        open(paths[1]).read()
        == open(os.path.join(REPO, "gin_configs", "default.gin")).read()
    )
