"""Replay context, data side: stored latents, context windows, online order,
the posterior write-back of real `fit` steps, saving and resuming."""

import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer.data import context
from keras_dreamer.data import memory
from keras_dreamer.data.replay import Replay
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete
from tests.helpers import SMALL_MODEL
from tests.helpers import to_numpy

DETER, STOCH, CLASSES = 8, 2, 4  # the debug preset's RSSM
SPEC = context.latent_spec(DETER, STOCH, CLASSES)
OBS = {"obs": Box((3,))}


def step(t, first=False, rng=None, latent=True):
    out = {
        "obs": np.float32([t, 0, 0]),
        "action": np.eye(2, dtype=np.float32)[t % 2],
        "reward": np.float32(t % 3 == 0),
        "is_first": first,
        "is_last": False,
        "is_terminal": False,
    }
    if latent and rng is not None:
        out["latent/deter"] = rng.normal(size=DETER).astype(np.float32)
        out["latent/stoch"] = np.eye(CLASSES, dtype=np.uint8)[
            rng.integers(CLASSES, size=STOCH)
        ]
    return out


def test_latents_are_stored_exactly_and_compactly():
    rng = np.random.default_rng(0)
    replay = Replay(100, chunk_size=16, latents=SPEC)
    steps = [step(t, t == 0, rng) for t in range(10)] + [step(10)]  # no latent
    for s in steps:
        replay.add(s)
    stored = replay.stream(0)
    assert stored["latent/stoch"].dtype == np.uint8
    assert stored["latent/deter"].dtype == np.float32
    np.testing.assert_array_equal(
        stored["latent/deter"][:10], np.stack([s["latent/deter"] for s in steps[:10]])
    )
    np.testing.assert_array_equal(
        stored["latent/stoch"][:10], np.stack([s["latent/stoch"] for s in steps[:10]])
    )
    # A step without a latent (a random policy's) stores the initial state.
    assert not stored["latent/deter"][10].any() and not stored["latent/stoch"][10].any()
    # Float one-hot samples (the train step's) are stored exactly as uint8.
    ids = replay.sample(1, 4, ids=True)["_id"][:, :1]
    onehot = np.eye(CLASSES, dtype=np.float32)[np.zeros((1, 4, STOCH), int)]
    replay.update(ids, {"latent/stoch": onehot})
    per_step = memory.step_bytes(OBS, Discrete(2), SPEC)
    assert per_step == memory.step_bytes(OBS, Discrete(2)) + 4 * DETER + STOCH * CLASSES
    assert replay.stats()["replay/bytes"] == 16 * per_step


def test_step_without_context_stores_no_latents():
    replay = Replay(100)
    rng = np.random.default_rng(0)
    for t in range(5):
        replay.add(step(t, t == 0, rng))  # a policy's extras, context off
    assert "latent/deter" not in replay.spec


def test_online_serves_completed_windows_first_then_uniform():
    replay = Replay(1000, seed=0)
    replay.enable_online(4)
    for t in range(24):
        replay.add(step(t, t == 0), worker=t % 2)
    # Worker w's n-th step (n = 0, 1, ...) completes the window of steps
    # n-3..n when n % 4 == 0 (as DreamerV3's replay.online): n = 4, 8.
    # Queued in the order they completed: worker 0's, then worker 1's.
    expected = []
    for n in (4, 8):
        for w in (0, 1):
            expected.append([2 * k + w for k in range(n - 3, n + 1)])
    batch = replay.sample(3, 4, online=True)
    np.testing.assert_array_equal(batch["obs"][:, :, 0], expected[:3])
    batch = replay.sample(3, 4, online=True)
    assert batch["obs"][0, :, 0].tolist() == expected[3]
    # The queue is empty: the rest are uniform draws, consecutive steps of a worker.
    steps = batch["obs"][1:, :, 0]
    assert np.all(np.diff(steps, axis=1) == 2)
    assert replay.sample(2, 4, online=True)["obs"].shape == (2, 4, 3)
    with pytest.raises(ValueError, match="online window length 4"):
        replay.sample(2, 5, online=True)


def test_context_off_gives_the_old_batches():
    def filled(seed):
        replay = Replay(100, seed=seed)
        for t in range(30):
            replay.add(step(t, t == 0))
        return replay

    data = kd.data.ReplayDataset(filled(3), OBS, Discrete(2), 2, 5, replay_context=0)
    old = filled(3).sample(2, 5)
    new = data[0]
    assert sorted(new) == sorted(old)
    for key in old:
        np.testing.assert_array_equal(new[key], old[key])


def test_bad_settings_have_clear_errors():
    replay = Replay(100)
    with pytest.raises(ValueError, match="replay_context must be 0"):
        kd.data.ReplayDataset(replay, OBS, Discrete(2), 2, 5, replay_context=2)
    with pytest.raises(ValueError, match="stores \\['latent/deter', 'latent/stoch'\\]"):
        kd.data.ReplayDataset(replay, OBS, Discrete(2), 2, 5, replay_context=1)
    with pytest.raises(ValueError, match="replay_online must be a bool"):
        kd.data.ReplayDataset(replay, OBS, Discrete(2), 2, 5, replay_online="yes")


def test_saved_replay_keeps_latents(tmp_path):
    rng = np.random.default_rng(1)
    replay = Replay(100, chunk_size=8, latents=SPEC)
    for t in range(20):
        replay.add(step(t, t == 0, rng))
    replay.save(str(tmp_path / "r"))
    loaded = Replay(100, chunk_size=8, latents=SPEC).load(str(tmp_path / "r"))
    for key in SPEC:
        np.testing.assert_array_equal(loaded.stream(0)[key], replay.stream(0)[key])
    # A replay saved without context gains zero latents when loaded with it.
    plain = Replay(100)
    for t in range(6):
        plain.add(step(t, t == 0))
    plain.save(str(tmp_path / "p"))
    grown = Replay(100, latents=SPEC).load(str(tmp_path / "p"))
    assert grown.stream(0)["latent/deter"].shape == (6, DETER)
    assert not grown.stream(0)["latent/deter"].any()
    grown.add(step(6, rng=rng))
    assert grown.stream(0)["latent/deter"][6].any()


def _forcing_noise(stoch):
    """Uniform noise whose Gumbel-max sample is the one-hot `stoch`."""
    return np.where(stoch > 0.5, 1.0 - 1e-7, 1e-30).astype(np.float32)


def test_fit_writes_back_the_posteriors_of_the_trained_rows():
    """After one real train step, the replay rows of the trained window hold
    the world model's posteriors for them: recomputed here by observing the
    same window from its context latent with the weights before the step."""
    rng = np.random.default_rng(0)
    space = {"image": Box((16, 16, 3), 0, 255, "uint8")}
    replay = Replay(200, chunk_size=64, seed=0, latents=SPEC)
    for t in range(40):
        image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        image[0, 0, 0] = t
        replay.add(
            {
                "image": image,
                "action": np.eye(3, dtype=np.float32)[t % 3],
                "reward": np.float32(t % 5 == 0),
                "is_first": t in (0, 17),
                "is_last": False,
                "is_terminal": False,
                "latent/deter": np.tanh(rng.normal(size=DETER)).astype(np.float32),
                "latent/stoch": np.eye(CLASSES, dtype=np.uint8)[
                    rng.integers(CLASSES, size=STOCH)
                ],
            }
        )
    before = replay.stream(0)
    data = kd.data.ReplayDataset(
        replay, space, Discrete(3), batch_size=2, batch_length=6, replay_context=1
    )
    sampled = []
    sample = data._windows.sample
    data._windows.sample = lambda: sampled.append(sample()) or sampled[-1]
    wm = kd.WorldModel({"image": (16, 16, 3)}, kd.Discrete(3), **SMALL_MODEL)
    wm.compile()
    weights = wm.get_weights()
    wm.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
    after = replay.stream(0)
    changed = np.flatnonzero(
        np.any(after["latent/deter"] != before["latent/deter"], axis=-1)
    )
    assert len(changed) > 0
    wm.set_weights(weights)
    matched = 0
    for batch in sampled:
        rows = batch["image"][:, 1:, 0, 0, 0].astype(int)  # pixel (0, 0, 0) is t
        if not set(rows.reshape(-1)) >= set(changed.tolist()):
            continue
        carry = {
            "deter": batch["latent/deter"][:, 0],
            "stoch": batch["latent/stoch"][:, 0],
            "action": batch["action"][:, 0],
        }
        steps = {
            k: v[:, 1:]
            for k, v in batch.items()
            if not k.startswith(("latent/", "replay/"))
        }
        written = after["latent/stoch"][rows].astype(np.float32)
        _, feat = wm.observe(carry, steps, noise=_forcing_noise(written))
        feat = to_numpy(feat)
        np.testing.assert_allclose(
            after["latent/deter"][rows], feat["deter"], atol=1e-5
        )
        np.testing.assert_array_equal(written, feat["stoch"])
        matched += 1
    assert matched == 1


def test_agent_fit_writes_back_one_hot_posteriors():
    """The agent's train step writes its posteriors too (not zeros): every
    row it rewrote holds a one-hot sample and a changed deter."""
    rng = np.random.default_rng(0)
    replay = Replay(200, seed=0, latents=SPEC)
    for t in range(30):
        replay.add(
            {
                "image": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                "action": np.eye(3, dtype=np.float32)[t % 3],
                "reward": np.float32(0),
                "is_first": t == 0,
                "is_last": False,
                "is_terminal": False,
            }
        )  # no latents: zeros, as a random policy's steps
    agent = kd.Agent({"image": (16, 16, 3)}, kd.Discrete(3), **SMALL_MODEL)
    agent.compile()
    data = kd.data.ReplayDataset(
        replay,
        {"image": Box((16, 16, 3), 0, 255, "uint8")},
        Discrete(3),
        batch_size=2,
        batch_length=6,
        replay_context=1,
    )
    agent.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    stored = replay.stream(0)
    written = np.any(stored["latent/stoch"] > 0, axis=(-2, -1))
    assert written.sum() >= 6  # at least one trained window
    assert np.all(stored["latent/stoch"][written].sum(-1) == 1)
    assert np.all(np.abs(stored["latent/deter"][written]).sum(-1) > 0)
