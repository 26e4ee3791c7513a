"""Data-parallel training (`keras_dreamer.distribute`).

On JAX, a subprocess with two virtual CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=2`, which must be set
before JAX starts) trains the world model and the agent for two steps on
one device and on both, from the same weights and the same global batches:
the losses agree (the agent's second step from one same state, its two-hot
read-outs up to their magnified rounding), every weight
is replicated on both devices, acting works during and after `fit`, and the
logdir holds each line once. On TensorFlow, asking for more than one device
is a clear error, never a silent single-device run.
"""

import json

import keras
import numpy as np
import pytest

from keras_dreamer import distribute
from keras_dreamer.agent import AGENT_LOG_KEYS
from tests.helpers import once_per_session
from tests.helpers import run_python

BACKEND = keras.backend.backend()
WORLD_MODEL_LOSSES = ("image", "rew", "con", "dyn", "rep")
# Agent logs computed from the critic's or the reward head's two-hot
# read-out (the expected value over symexp bins), which amplifies rounding.
TWO_HOT_READOUT_KEYS = {"loss", "opt/grad_norm"} | (
    set(AGENT_LOG_KEYS) - {"con", "weight", "ent/action"}
)
jax_only = pytest.mark.skipif(
    BACKEND != "jax", reason="data parallel runs on JAX only (see docs/scaling.md)"
)

# Runs in a fresh process with two CPU devices; prints one JSON line.
SCRIPT = r"""
import json, os, sys
import jax
import keras
import numpy as np
import keras_dreamer as kd
from keras_dreamer import distribute
from tests.helpers import Batches, RecordLogs, random_batch, read_jsonl

assert jax.local_device_count() == 2, jax.devices()
logdir = sys.argv[1]
BATCHES = [random_batch(batch=4, length=8, seed=i) for i in range(2)]
OBS = {"image": np.zeros((2, 16, 16, 3), np.uint8), "is_first": np.ones(2, bool)}


def build(kind):
    keras.utils.set_random_seed(0)
    cls = kd.Agent if kind == "agent" else kd.WorldModel
    model = cls({"image": (16, 16, 3)}, kd.Discrete(3), preset="debug",
                mults=(4, 4), seed=1)
    # An epsilon well above float rounding: with DreamerV3's 1e-20, LaProp's
    # first steps move a weight whose gradient is only rounding noise by a
    # full +-learning_rate, which no reordering of sums can keep equal.
    model.compile(optimizer=kd.optimizers.LaProp(
        learning_rate=1e-3, warmup=0, epsilon=1e-5))
    return model


class Act(keras.callbacks.Callback):
    # Acts with the agent's policy after every train step (as a collector).
    def __init__(self, agent):
        super().__init__()
        self.agent, self.sums = agent, []

    def on_train_batch_end(self, batch, logs=None):
        self.sums.append(self.agent.policy(OBS).sum(-1).tolist())


def train(kind, model, logdir=None, batches=BATCHES, steps=2):
    record = RecordLogs()
    callbacks = [record]
    act = Act(model) if kind == "agent" else None
    if act is not None:
        callbacks.append(act)
    if logdir is not None:
        callbacks.append(kd.DreamerReportCallback(
            logdir, outputs=("jsonl",), log_every=1, usage=False,
            report_data=None))
    # shuffle=False: Keras shuffles a PyDataset's batch order by default.
    model.fit(Batches(batches, steps), epochs=1, steps_per_epoch=steps, verbose=0,
              callbacks=callbacks, shuffle=False)
    logs = [{k: float(v) for k, v in step.items()} for step in record.logs]
    return logs, (act.sums if act is not None else None)


out = {}
for kind in ("world_model", "agent"):
    single = build(kind)
    weights = [np.array(w) for w in single.get_weights()]
    one, _ = train(kind, single)
    run_dir = os.path.join(logdir, kind)
    with distribute.scope(2) as dist:
        model = build(kind)
        model.set_weights(weights)
        two, acted = train(kind, model, run_dir)
        after = model.policy(OBS).sum(-1).tolist() if kind == "agent" else None
        placed = sorted({len(v.value.sharding.device_set) for v in model.weights})
    lines = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    out[kind] = {
        "one": one, "two": two, "placed": placed, "acted": acted,
        "after": after, "devices": distribute.device_count(dist),
        "steps": [line["step"] for line in lines],
    }
    if kind == "agent":
        # Step 1 from one state: the one-device model takes every variable
        # (weights, slow critic, return percentiles, seeds) and the
        # optimizer's state from two devices after their step 0.
        with distribute.scope(2):
            first = build(kind)
            first.set_weights(weights)
            train(kind, first, steps=1)
            state = [keras.ops.convert_to_numpy(v.value)
                     for v in first.variables + first.optimizer.variables]
        variables = single.variables + single.optimizer.variables
        assert [tuple(v.shape) for v in variables] == [x.shape for x in state]
        for variable, value in zip(variables, state):
            variable.assign(value)
        out[kind]["one_from_two"], _ = train(kind, single, batches=BATCHES[1:],
                                             steps=1)

# A model built before the distribution was set cannot train under it.
model = build("world_model")
errors = {}
with distribute.scope(2):
    try:
        model.fit(Batches(BATCHES, 1), epochs=1, steps_per_epoch=1, verbose=0)
    except distribute.DistributionError as error:
        errors["built_before"] = str(error)
    model = build("world_model")
    odd = Batches([random_batch(batch=3, length=8, seed=0)], 1)
    odd.batch_spec = odd.batches[0]  # as a kd.data.Collector tells its batch
    try:
        model.fit(odd, epochs=1, steps_per_epoch=1, verbose=0)
    except distribute.DistributionError as error:
        errors["odd_batch"] = str(error)
out["errors"] = errors
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    def train_in_a_subprocess(logdir):
        result = run_python(
            SCRIPT,
            logdir,
            backend="jax",
            env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
            timeout=1200,
        )
        assert result.returncode == 0, result.stderr[-5000:]
        line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT ") :])

    return once_per_session(tmp_path_factory, "data_parallel", train_in_a_subprocess)[1]


@jax_only
@pytest.mark.parametrize("kind", ["world_model", "agent"])
def test_two_devices_give_the_losses_of_one(two_devices, kind):
    run = two_devices[kind]
    assert run["devices"] == 2
    assert run["placed"] == [2], "every weight is replicated on both devices"
    one, two = run["one"], run["two"]
    assert len(one) == len(two) == 2
    keys = [k for k in one[0] if k == "loss" or k.startswith("loss/")]
    assert len(keys) >= 6
    if kind == "agent":
        assert {"loss/policy", "loss/value", "loss/repval"} <= set(keys)
    # Step 0 starts from the same weights: every log of the step agrees
    # (losses, entropies, gradient norm, returns, advantages).
    for key in one[0]:
        np.testing.assert_allclose(
            two[0][key], one[0][key], rtol=2e-4, atol=2e-5, err_msg=key
        )
    # Step 1 starts from weights that agree up to rounding. The world-model
    # losses still agree; the actor-critic statistics of the agent may not
    # exactly: the actions sampled in imagination are discrete, and a
    # rounding-sized change of the actor can flip a sample near a boundary.
    assert set(one[1]) == set(two[1])
    world_model_keys = [k for k in keys if k[len("loss/") :] in WORLD_MODEL_LOSSES]
    assert len(world_model_keys) == len(WORLD_MODEL_LOSSES)
    for key in world_model_keys:
        np.testing.assert_allclose(
            two[1][key], one[1][key], rtol=1e-3, atol=1e-4, err_msg=key
        )
    if kind == "world_model":
        for key in one[1]:
            np.testing.assert_allclose(
                two[1][key], one[1][key], rtol=2e-4, atol=2e-5, err_msg=key
            )
    else:
        # From one same state, step 1 on one device and on two: everything
        # but the two-hot read-outs agrees as step 0 does (imagined states,
        # actions, continuation weights, entropies, world-model losses).
        # The expected value of a two-hot distribution over symexp bins (up
        # to +-4.85e8) turns one float32 rounding step of near-uniform logits
        # into about 0.02 of value, so the values, returns, advantages,
        # rewards and losses built on them differ by what the different
        # matmul blocking of a half batch rounds differently; at step 0 they
        # agree exactly only because the critic and reward head start at
        # zero logits, whose symmetric read-out is exactly 0.
        (again,) = run["one_from_two"]
        assert set(again) == set(two[1])
        for key in again:
            if key in TWO_HOT_READOUT_KEYS:
                np.testing.assert_allclose(
                    two[1][key], again[key], rtol=5e-2, atol=2e-2, err_msg=key
                )
            else:
                np.testing.assert_allclose(
                    two[1][key], again[key], rtol=2e-4, atol=2e-5, err_msg=key
                )
        assert len(set(again) - TWO_HOT_READOUT_KEYS) >= 12
    for step in two:
        # The frames of the global batch (4 x 8), not of one device's half.
        assert step["frames"] == 32.0
    # The steps trained: the losses moved.
    assert one[0]["loss"] != one[-1]["loss"]


@jax_only
def test_the_agent_acts_with_replicated_weights(two_devices):
    run = two_devices["agent"]
    # One-hot actions for both envs after every train step and after fit.
    assert run["acted"] == [[1.0, 1.0]] * 2
    assert run["after"] == [1.0, 1.0]


@jax_only
@pytest.mark.parametrize("kind", ["world_model", "agent"])
def test_the_logdir_of_a_data_parallel_fit_holds_each_line_once(two_devices, kind):
    run = two_devices[kind]
    assert run["steps"] == [1, 2]


@jax_only
def test_wrong_setups_fail_before_training(two_devices):
    errors = two_devices["errors"]
    assert "build the model after setting the distribution" in errors["built_before"]
    assert "does not divide over its 2 devices" in errors["odd_batch"]


def test_specs():
    assert distribute.make_distribution(None) is None
    for bad in (0, -1, True, "two", 1.5):
        with pytest.raises(distribute.DistributionError, match="data_parallel"):
            distribute.make_distribution(bad)
    assert distribute.local_batch_size(16) == 16
    assert distribute.is_chief() and distribute.process_count() == 1
    assert distribute.process_seed(5) == 5
    assert distribute.broadcast_from_chief({"a": np.int64(3)})["a"].item() == 3
    assert distribute.gather(np.int32(1)).tolist() == [1]


@jax_only
def test_more_devices_than_the_process_has_is_an_error():
    count = distribute.local_device_count()
    with pytest.raises(distribute.DistributionError, match="xla_force_host_platform"):
        distribute.make_distribution(count + 1)


@jax_only
def test_one_device_runs_the_distributed_path():
    distribution = distribute.make_distribution(1)
    assert distribute.device_count(distribution) == 1
    assert distribution.auto_shard_dataset is False


@pytest.mark.skipif(BACKEND == "jax", reason="the error path of the other backends")
@pytest.mark.parametrize("spec", [2, "data_parallel"])
def test_other_backends_refuse_data_parallel_with_a_clear_error(spec):
    with pytest.raises(distribute.DistributionError, match="need the JAX backend"):
        distribute.make_distribution(spec)
    # One device is fine: there is nothing to distribute.
    assert distribute.make_distribution(1) is None


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow error path")
def test_tensorflow_refuses_a_mirrored_strategy_fit():
    # Two logical CPU devices exist only if set before TensorFlow starts.
    script = r"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras_dreamer as kd
from keras_dreamer import distribute
from tests.helpers import Batches, random_batch
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = kd.WorldModel({"image": (16, 16, 3)}, kd.Discrete(3), preset="debug",
                          mults=(4, 4))
    model.compile()
try:
    model.fit(Batches([random_batch(batch=4)], 1), epochs=1, verbose=0)
except distribute.DistributionError as error:
    print("REFUSED", error)
"""
    result = run_python(script, backend="tensorflow")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REFUSED" in result.stdout and "JAX backend" in result.stdout
