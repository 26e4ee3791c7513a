"""Envs in processes (`kd.envs.ProcessEnvs`): the same data as envs in this
process, recovery from envs that raise, die or hang, and no env process left
behind after a normal end, an exception in training or SIGTERM.

Real processes and real envs throughout; nothing is mocked.
"""

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

import keras_dreamer as kd
from keras_dreamer.data import Collector
from keras_dreamer.data import Replay
from keras_dreamer.envs import EnvProcessError
from keras_dreamer.envs import EnvRestartWarning
from keras_dreamer.envs import ProcessEnvs
from tests.faulty_envs import FaultyCatch
from tests.faulty_envs import FaultyResetCatch
from tests.helpers import require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATCH = {"size": 16, "lives": 1}  # episodes of about 20 steps
# A small world: world generation (at every reset) takes 0.2 s, not 1.4 s.
CRAFTER = {"size": 32, "length": 40, "area": (24, 24)}


def collector(env, seed=0):
    return Collector(env, replay=Replay(5000), batch_size=2, batch_length=8, seed=seed)


def streams(collector):
    return [collector.replay.stream(i) for i in range(len(collector.envs))]


def assert_same_streams(a, b):
    assert len(a) == len(b)
    for one, other in zip(a, b):
        assert one.keys() == other.keys()
        for key in one:
            np.testing.assert_array_equal(one[key], other[key], err_msg=key)


def children():
    return {p.pid for p in psutil.Process().children(recursive=True)}


def assert_gone(pids, timeout=15):
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left behind: {alive}"


def check_episode_kinds(collector, one, max_length):
    """Same keys, dtypes, shapes as the one-env collector; plausible episodes."""
    batch, reference = collector[0], one[0]
    assert {k: (v.dtype, v.shape[2:]) for k, v in batch.items()} == {
        k: (v.dtype, v.shape[2:]) for k, v in reference.items()
    }
    lengths, scores = [], []
    for stream in streams(collector):
        starts = np.flatnonzero(stream["is_first"])
        for start, end in zip(starts, np.flatnonzero(stream["is_last"])):
            assert end > start
            lengths.append(end - start + 1)
            scores.append(stream["reward"][start + 1 : end + 1].sum())
    assert lengths, "no episode finished"
    assert all(2 <= length <= max_length for length in lengths)
    return lengths, scores


# ---------------------------------------------------------------------------
# The same episodes as envs in this process.


@pytest.mark.backend_independent
@pytest.mark.parametrize("count", [2, 4])
def test_catch_in_processes_collects_the_in_process_episodes(count):
    serial = collector([kd.envs.make("catch", **CATCH) for _ in range(count)], seed=3)
    serial.collect(count * 60)
    with ProcessEnvs("catch", count, env_kwargs=CATCH) as envs:
        pids = envs.pids
        assert pids and set(pids) <= children()
        parallel = collector(envs, seed=3)
        parallel.collect(count * 60)
        assert_same_streams(streams(serial), streams(parallel))
        metrics, expected = parallel.drain_metrics(), serial.drain_metrics()
        for key in ("episode/count", "episode/score", "episode/length", "env/steps"):
            assert metrics[key] == expected[key], key
        assert metrics["env/restarts"] == 0 and metrics["episode/count"] >= count
        lengths, scores = check_episode_kinds(
            parallel, collector(kd.envs.make("catch", **CATCH), seed=3), 1001
        )
        parallel.close()
        assert envs.closed
    assert all(-1 <= score <= length for score, length in zip(scores, lengths))
    assert_gone(pids)


@pytest.mark.backend_independent
@pytest.mark.parametrize("count", [2, 4])
def test_crafter_in_processes_collects_episodes_like_in_process(count):
    require("crafter")
    serial = collector(
        [kd.envs.make("crafter", **CRAFTER) for _ in range(count)], seed=1
    )
    serial.collect(count * 45)
    with ProcessEnvs("crafter", count, env_kwargs=CRAFTER) as envs:
        parallel = collector(envs, seed=1)
        parallel.collect(count * 45)
        pids = envs.pids
        # The worlds come from the seeds, so every env starts in the same
        # world as in this process. (Later steps may differ: Crafter picks
        # which creature to despawn from a set, in memory-address order.)
        for one, other in zip(streams(serial), streams(parallel)):
            assert len(one["image"]) == len(other["image"]) == 45
            np.testing.assert_array_equal(one["image"][0], other["image"][0])
            np.testing.assert_array_equal(one["is_first"], other["is_first"])
        assert parallel.drain_metrics()["episode/count"] >= count
        check_episode_kinds(
            parallel, collector(kd.envs.make("crafter", **CRAFTER), seed=1), 41
        )
    assert_gone(pids)


# ---------------------------------------------------------------------------
# Standby processes: the next episode is reset ahead.


def assert_no_cut_episode(stream):
    """Episodes follow each other whole: a first obs right after each last."""
    firsts = np.flatnonzero(stream["is_first"])
    lasts = np.flatnonzero(stream["is_last"])
    assert firsts[0] == 0 and len(firsts) > 1
    assert stream["is_last"][firsts[1:] - 1].all()
    lasts = lasts[lasts + 1 < len(stream["is_last"])]
    assert stream["is_first"][lasts + 1].all()


@pytest.mark.backend_independent
@pytest.mark.parametrize("count, standby", [(1, 1), (2, 2)])
def test_standbys_start_each_next_episode_and_the_run_repeats(count, standby):
    runs = []
    for _ in range(2):
        with ProcessEnvs(
            "catch", count, env_kwargs=CATCH, seed=5, standby=standby
        ) as envs:
            assert len(envs.pids) == count + standby
            pids = envs.pids
            data = collector(envs, seed=3)
            data.collect(count * 150)
            runs.append(streams(data))
            metrics = data.drain_metrics()
            # Processes traded places with standbys as episodes ended.
            assert sorted(envs._rows + list(envs._standbys)) == list(
                range(count + standby)
            )
            assert envs._rows != list(range(count))
        assert_gone(pids)
        assert metrics["episode/count"] >= 3 * count
        assert metrics["env/restarts"] == 0
        for stream in runs[-1]:
            assert_no_cut_episode(stream)
            starts = np.flatnonzero(stream["is_first"])
            # Each episode's first ball row is the top of the grid; the
            # worlds differ, so the standbys' episodes are not copies.
            assert len({stream["image"][s].tobytes() for s in starts}) > 1
    # Standbys are taken first-in first-out: timing never changes the data.
    assert_same_streams(*runs)


@pytest.mark.backend_independent
def test_crafter_with_a_standby_collects_whole_episodes():
    require("crafter")
    with ProcessEnvs("crafter", 2, env_kwargs=CRAFTER, seed=0, standby=2) as envs:
        data = collector(envs, seed=1)
        data.collect(2 * 100)
        assert data.drain_metrics()["episode/count"] >= 4
        for stream in streams(data):
            assert_no_cut_episode(stream)
        check_episode_kinds(
            data, collector(kd.envs.make("crafter", **CRAFTER), seed=1), 41
        )


@pytest.mark.backend_independent
def test_a_standby_whose_reset_fails_is_restarted_and_no_episode_is_cut():
    factory = functools.partial(FaultyResetCatch, fail_reset=2, **CATCH)
    with ProcessEnvs(factory, 1, seed=0, standby=1) as envs:
        data = collector(envs)
        with pytest.warns(EnvRestartWarning, match="failed in reset") as record:
            data.collect(200)
        assert "ZeroDivisionError: a reset that fails on purpose" in str(
            record[0].message
        )
        assert sum(envs.restarts) == len(record) >= 1
        metrics = data.drain_metrics()
    (stream,) = streams(data)
    assert_no_cut_episode(stream)
    assert metrics["episode/count"] == stream["is_last"].sum() >= 3


# ---------------------------------------------------------------------------
# Recovery.


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "mode, timeout, message",
    [
        ("raise", 30.0, r"ZeroDivisionError: division by zero"),
        ("exit", 30.0, r"died \(exit code 3\)"),
        ("hang", 1.0, r"no reply to step within 1 s \(hung\)"),
    ],
)
def test_a_failed_env_is_restarted_and_the_replay_keeps_its_steps(
    mode, timeout, message
):
    # Each env's first process fails on its 16th step, the restarted one
    # would fail on its 16th (which 25 rounds never reach).
    factory = functools.partial(FaultyCatch, mode=mode, fail_after=15, size=16)
    with ProcessEnvs(factory, 2, seed=0, timeout=timeout) as envs:
        data = collector(envs)
        data.collect(2 * 10)
        before = streams(data)
        first_pids = envs.pids
        with pytest.warns(EnvRestartWarning, match=message) as record:
            data.collect(2 * 15)
        assert len(record) == 2
        text = str(record[0].message)
        assert "env 0 (FaultyCatch)" in text and "episode is cut" in text
        if mode == "raise":
            assert "Traceback of the env process" in text and "faulty_envs.py" in text
        assert envs.restarts == [1, 1]
        assert not set(first_pids) & set(envs.pids)
        after = streams(data)
        metrics = data.drain_metrics()
    for old, new in zip(before, after):
        for key in old:  # nothing collected before the failure is lost
            np.testing.assert_array_equal(new[key][:10], old[key], err_msg=key)
        assert len(new["is_first"]) == 25
        # Rows 0-15: the first process's reset and 15 steps; row 16: the
        # restarted env's first obs, where the cut episode ends.
        assert new["is_first"][16] and not new["is_first"][1:16].any()
        assert not new["is_last"][:16].any()
    assert metrics["env/restarts"] == 2 and metrics["episode/count"] == 0
    assert len(data.replay) == data.env_steps == 50
    assert_gone(first_pids)


@pytest.mark.backend_independent
def test_an_env_that_keeps_failing_stops_with_an_error():
    factory = functools.partial(FaultyCatch, fail_after=0, fail_every=1, size=16)
    envs = ProcessEnvs(factory, 2, retries=1)
    envs.reset()
    with pytest.warns(EnvRestartWarning, match="restart 1"):
        assert [obs["is_first"] for obs in envs.step([0, 0])] == [True, True]
    with pytest.raises(EnvProcessError, match=r"env 0 \(FaultyCatch\) failed 2 times"):
        envs.step([0, 0])
    with pytest.raises(EnvProcessError, match="stopped after an env failed"):
        envs.step([0, 0])
    pids = [pid for pid in envs.pids if pid is not None]
    assert pids  # env 1 still runs until close
    envs.close()
    assert_gone(pids)


@pytest.mark.backend_independent
def test_bad_arguments_say_what_is_expected():
    with pytest.raises(ValueError, match="count must be an int >= 1"):
        ProcessEnvs("catch", 0)
    with pytest.raises(ValueError, match="could not pickle.*not a lambda"):
        ProcessEnvs(lambda: kd.envs.Catch(), 2)
    with pytest.raises(ValueError, match="timeout must be a number"):
        ProcessEnvs("catch", 1, timeout=0)
    with pytest.raises(ValueError, match="standby must be an int >= 0, got -1"):
        ProcessEnvs("catch", 1, standby=-1)
    with pytest.raises(
        EnvProcessError, match="could not start env 0.*Unknown env name"
    ):
        ProcessEnvs("no_such_env", 1)
    with ProcessEnvs("catch", 1, env_kwargs={"size": 16}) as envs:
        with pytest.raises(ValueError, match="needs 1 actions"):
            envs.step([0, 1])
        with pytest.raises(ValueError, match=r"env 0.*Discrete\(3\)"):
            envs.step([7])
        assert envs.restarts == [0]
    with pytest.raises(ValueError, match="closed"):
        envs.step([0])


# ---------------------------------------------------------------------------
# No env process outlives its run.


def workers_of(pid, count, timeout=240):
    """The env processes of process `pid`, once `count` of them run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = [
                p
                for p in psutil.Process(pid).children(recursive=True)
                if "spawn_main" in " ".join(p.cmdline())
            ]
        except psutil.NoSuchProcess:
            found = []
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"process {pid} did not start {count} env processes")


def environment():
    return {**os.environ, "PYTHONPATH": REPO}


def test_sigterm_to_the_train_command_leaves_no_env_process(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keras_dreamer.cli",
            "train",
            "--logdir",
            str(tmp_path / "run"),
            "--gin_file",
            os.path.join("gin_configs", "debug.gin"),
            "--gin_param",
            "train.envs = 2",
            "--gin_param",
            "train.env_standby = 1",  # and one standby env process
            "--gin_param",
            "train.steps = 100000",
        ],
        cwd=REPO,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        workers = workers_of(proc.pid, 3)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The command exits with 128 + SIGTERM after its cleanup (docs/troubleshooting.md).
    assert proc.returncode == 128 + signal.SIGTERM
    assert_gone([p.pid for p in workers + descendants])


def test_an_exception_in_training_leaves_no_env_process(tmp_path):
    script = textwrap.dedent(
        """
        import keras
        import keras_dreamer as kd

        class Model(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(1)

            def call(self, batch):
                image = keras.ops.cast(batch["image"], "float32")
                return self.dense(keras.ops.mean(image, axis=(2, 3)))[..., 0]

            def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                             training=True):
                return keras.ops.mean(keras.ops.square(y_pred - x["reward"]))

        class Fail(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 1:
                    raise RuntimeError("an exception in training")

        envs = kd.envs.ProcessEnvs("catch", 2, env_kwargs={"size": 16})
        print(*envs.pids, flush=True)
        data = kd.data.Collector(envs, replay=kd.data.Replay(1000), batch_size=2,
                                 batch_length=8, seed=0)
        model = Model()
        model.compile(optimizer="sgd")
        model.fit(data, steps_per_epoch=4, epochs=1, callbacks=[Fail()], verbose=0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "an exception in training" in result.stderr
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2
    assert_gone(pids)


@pytest.mark.backend_independent
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_a_python_process_stopped_by_a_signal_leaves_no_env_process(signum):
    # SIGINT: KeyboardInterrupt, the interpreter exits and closes the envs.
    # SIGKILL: nothing runs in the parent; its env processes see it gone.
    # A pytest-xdist worker ignores SIGINT and its children inherit that;
    # a script started from a shell has Python's own handler.
    script = textwrap.dedent(
        """
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import keras_dreamer as kd

        envs = kd.envs.ProcessEnvs("catch", 2, env_kwargs={"size": 16})
        print(*envs.pids, flush=True)
        while True:
            envs.step([0, 1])
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pids = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(psutil.pid_exists(pid) for pid in pids)
        proc.send_signal(signum)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (1, -signum)
    assert_gone(pids)
