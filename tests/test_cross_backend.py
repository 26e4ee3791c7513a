"""`.keras` files move between the backends: a tiny agent saved on the
running backend loads in a fresh process on each other backend with the same
weights and the same acting outputs, trains on there, and that file loads
back here with the outputs it had there."""

import json

import keras
import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer import backend
from tests.helpers import SMALL_IMAGE
from tests.helpers import random_batch
from tests.helpers import run_python
from tests.helpers import to_numpy

SMALL_AGENT = {"preset": "debug", "mults": (4, 4)}
# Outputs differ between backends by float rounding only (their kernels sum
# in different orders); the weights themselves move bit for bit.
OUTPUT_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}

# Loads `argv[1]` (a .keras agent), writes its weights and acting outputs to
# `argv[2]`, trains one step, saves the result as `argv[3]` and writes the
# new acting outputs to `argv[4]`.
CONTINUE = """
import sys
import keras
import numpy as np
import keras_dreamer.agent  # registers the classes (kd loads lazily)
import keras_dreamer.optimizers
from tests.test_cross_backend import acting_outputs, save_outputs, train_batch

agent = keras.saving.load_model(sys.argv[1])
save_outputs(sys.argv[2], agent, with_weights=True)
logs = agent.train_on_batch(train_batch(1), return_dict=True)
assert np.isfinite(float(logs["loss/image"])), logs
agent.save(sys.argv[3])
save_outputs(sys.argv[4], agent)
print("trained", keras.config.backend())
"""


def train_batch(seed):
    return random_batch(batch=2, length=4, seed=seed)


def acting_outputs(agent):
    """Acting outputs with fixed noise, and the slow critic's values."""
    obs = {"image": train_batch(5)["image"][:, 0], "is_first": np.ones(2, bool)}
    noise = {
        "action": np.full((2, 3), 0.5, "float32"),
        "latent": np.full((2, 2, 4), 0.5, "float32"),
    }
    carry = agent.initial_policy_carry(2)
    outputs = to_numpy(agent.policy_step(carry, obs, noise=noise))
    flat = {f"out{i}": v for i, v in enumerate(keras.tree.flatten(outputs))}
    width = agent.actor.net.hidden[0].dense.kernel.shape[0]
    feat = np.linspace(-1, 1, 2 * width, dtype="float32").reshape(2, width)
    flat["slow_value"] = to_numpy(agent.critic.slow_value(feat))
    return flat


def save_outputs(path, agent, with_weights=False):
    arrays = acting_outputs(agent)
    if with_weights:
        arrays.update({f"w{i}": to_numpy(w) for i, w in enumerate(agent.weights)})
    np.savez(path, **arrays)


def assert_outputs_match(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], err_msg=key, **OUTPUT_TOLERANCE)


@pytest.mark.parametrize("other", [b for b in backend.SUPPORTED if b != backend.NAME])
def test_a_keras_file_moves_to_another_backend_and_back(other, tmp_path):
    pytest.importorskip(other)
    keras.utils.set_random_seed(3)
    agent = kd.Agent({"image": SMALL_IMAGE}, kd.Discrete(3), **SMALL_AGENT)
    agent.compile()
    agent.train_on_batch(train_batch(0))
    # Saved as asked ("auto"), not as resolved here: another backend resolves
    # it itself (a JAX file forcing torch.compile took many minutes).
    assert agent.get_compile_config()["jit_compile"] == "auto"
    saved = tmp_path / "here.keras"
    agent.save(saved)
    files = [tmp_path / name for name in ("there.npz", "there.keras", "after.npz")]
    result = run_python(CONTINUE, saved, *files, backend=other, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == other

    there = dict(np.load(files[0]))
    for i, weight in enumerate(agent.weights):
        np.testing.assert_array_equal(there.pop(f"w{i}"), to_numpy(weight))
    assert_outputs_match(there, acting_outputs(agent))

    back = keras.saving.load_model(files[1])
    assert back.optimizer.iterations.value == 2  # one step here, one there
    assert_outputs_match(acting_outputs(back), dict(np.load(files[2])))
    assert json.dumps(back.agent_config) == json.dumps(agent.agent_config)
