"""Imagination's loop body through `backend.gradient_free_step`: compiled
where the backend runs eagerly (PyTorch, from 256 start states), it imagines
the same trajectories as the eager body and records no gradient; its mode
variable is checked."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_dreamer as kd
from keras_dreamer import backend
from keras_dreamer.backend import common

STARTS, HORIZON = 256, 3


def imagine(agent, seed):
    rng = np.random.default_rng(seed)
    rssm = agent.world_model.rssm
    start = {
        "deter": rng.standard_normal((STARTS, rssm.deter)).astype("float32"),
        "stoch": np.eye(rssm.classes, dtype="float32")[
            rng.integers(0, rssm.classes, (STARTS, rssm.stoch))
        ],
    }
    noise = {
        "action": rng.uniform(size=(HORIZON, STARTS, 3)).astype("float32"),
        "latent": rng.uniform(size=(HORIZON, STARTS, rssm.stoch, rssm.classes)).astype(
            "float32"
        ),
    }
    start, noise = keras.tree.map_structure(ops.convert_to_tensor, (start, noise))
    return agent.imagine(start, HORIZON, noise=noise)


def test_compiled_and_eager_imagination_agree(monkeypatch):
    agent = kd.Agent({"obs": (4,)}, kd.Discrete(3), preset="debug", seed=0)
    monkeypatch.setenv(common.STEP_COMPILE_ENV, "off")
    eager = keras.tree.map_structure(ops.convert_to_numpy, imagine(agent, 0))
    monkeypatch.setenv(common.STEP_COMPILE_ENV, "auto")
    for seed in (0, 1):  # the second call reuses what the first compiled
        traj = imagine(agent, seed)
        if keras.config.backend() == "torch":
            assert not any(t.requires_grad for t in keras.tree.flatten(traj))
        traj = keras.tree.map_structure(ops.convert_to_numpy, traj)
        if seed == 0:
            for key in ("deter", "stoch", "action"):
                np.testing.assert_allclose(traj[key], eager[key], atol=1e-5)
    assert traj["deter"].shape == (STARTS, HORIZON + 1, 8)


def test_a_bad_mode_is_named(monkeypatch):
    monkeypatch.setenv(common.STEP_COMPILE_ENV, "sometimes")
    step = backend.gradient_free_step(lambda carry, x: (carry, x))
    with pytest.raises(ValueError, match="KERAS_DREAMER_STEP_COMPILE"):
        common.step_compile_mode()
    if keras.config.backend() == "torch":
        with pytest.raises(ValueError, match="KERAS_DREAMER_STEP_COMPILE"):
            step(np.zeros((STARTS, 2), "float32"), np.zeros(2, "float32"))
