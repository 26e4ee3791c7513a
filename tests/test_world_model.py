import keras
import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer import presets
from tests.helpers import SMALL_IMAGE
from tests.helpers import SMALL_MODEL
from tests.helpers import random_batch
from tests.helpers import to_numpy
from tests.helpers import value_and_grad

# World-model parameter counts of DreamerV3 (encoder + RSSM + decoder + reward
# + continue) for a 64x64x3 image and 18 discrete actions, from the reference
# implementation (dreamerv3_semantics.md section 1.7).
REFERENCE_COUNTS = {
    "size1m": {
        "enc": 14_304,
        "dyn": 377_472,
        "dec": 80_595,
        "rew": 57_663,
        "con": 41_153,
    },
    "size12m": {
        "enc": 220_416,
        "dyn": 5_982_720,
        "dec": 1_272_003,
        "rew": 721_407,
        "con": 656_129,
    },
    "size25m": {
        "enc": 493_824,
        "dyn": 13_446_912,
        "dec": 2_857_635,
        "rew": 1_573_503,
        "con": 1_475_713,
    },
}


def small_model(**kwargs):
    return kd.WorldModel(
        {"image": SMALL_IMAGE}, kd.Discrete(3), **{**SMALL_MODEL, **kwargs}
    )


@pytest.fixture(scope="module")
def model():
    return small_model(seed=0)


@pytest.mark.parametrize("preset", sorted(REFERENCE_COUNTS))
def test_parameter_counts_match_the_reference(preset):
    wm = kd.WorldModel({"image": (64, 64, 3)}, kd.Discrete(18), preset=preset)
    parts = {
        "enc": wm.encoder,
        "dyn": wm.rssm,
        "dec": wm.decoder,
        "rew": wm.reward_head,
        "con": wm.cont_head,
    }
    counts = {k: layer.count_params() for k, layer in parts.items()}
    reference = REFERENCE_COUNTS[preset]
    for key, expected in reference.items():
        assert abs(counts[key] - expected) <= 0.01 * expected, (
            key,
            counts[key],
            expected,
        )
    total = sum(reference.values())
    assert abs(wm.count_params() - total) <= 0.01 * total
    assert wm.count_params() == total  # the layouts match exactly


def test_presets_follow_the_reference_rule():
    for name in [
        "size1m",
        "size12m",
        "size25m",
        "size50m",
        "size100m",
        "size200m",
        "size400m",
    ]:
        config = presets.resolve(name)
        hidden = config["hidden"]
        assert config["deter"] == 8 * hidden
        assert config["classes"] == config["depth"] == hidden // 16
        assert config["units"] == hidden and config["stoch"] == 32
    assert presets.resolve("size12m")["deter"] == 2048
    assert presets.resolve(None) == presets.resolve("size200m")


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="size12m") as info:
        kd.WorldModel({"image": (64, 64, 3)}, 4, preset="size7m")
    assert "debug" in str(info.value)
    with pytest.raises(ValueError, match="deterr"):
        kd.WorldModel({"image": (64, 64, 3)}, 4, preset="debug", deterr=3)


def test_outputs_and_carry_shapes(model):
    batch = random_batch()
    out = model(batch)
    assert out["recon"]["image"].shape == (2, 6, *SMALL_IMAGE)
    assert out["post"].shape == (2, 6, 2, 4)
    assert out["prior"].shape == (2, 6, 2, 4)
    assert out["reward"].shape == (2, 6, 5)
    assert out["cont"].shape == (2, 6)
    carry, feat = model.observe(model.initial_carry(2), batch)
    assert tuple(carry["deter"].shape) == (2, 8)
    assert tuple(carry["stoch"].shape) == (2, 2, 4)
    assert tuple(carry["action"].shape) == (2, 3)
    carry, img = model.imagine(carry, batch["action"][:, :4])
    assert tuple(img["deter"].shape) == (2, 4, 8)
    decoded = model.decode(img)
    assert decoded["image"].shape == (2, 4, *SMALL_IMAGE)
    assert decoded["reward"].shape == (2, 4)
    np.testing.assert_array_equal(to_numpy(decoded["reward"]), 0.0)  # zero-init head


def test_loss_values_are_consistent(model):
    batch = random_batch()
    noise = np.random.default_rng(0).uniform(size=(2, 6, 2, 4)).astype(np.float32)
    values = to_numpy(model.loss_metrics(batch, noise=noise))
    assert set(values) == {
        "loss",
        "loss/image",
        "loss/rew",
        "loss/con",
        "loss/dyn",
        "loss/rep",
        "dyn_ent",
        "rep_ent",
    }
    expected = (
        values["loss/image"]
        + values["loss/rew"]
        + values["loss/con"]
        + values["loss/dyn"]
        + 0.1 * values["loss/rep"]
    )
    np.testing.assert_allclose(values["loss"], expected, rtol=1e-5)
    # The reward head starts at uniform logits over 5 bins.
    np.testing.assert_allclose(values["loss/rew"], np.log(5), rtol=1e-5)
    assert values["loss/dyn"] >= 1.0 and values["loss/rep"] >= 1.0
    # Image loss: sum of squared errors over H, W, C against uint8 / 255.
    recon = to_numpy(model(batch, noise=noise)["recon"]["image"])
    sse = ((recon - batch["image"] / 255.0) ** 2).sum((2, 3, 4)).mean()
    np.testing.assert_allclose(values["loss/image"], sse, rtol=1e-4)
    np.testing.assert_allclose(
        to_numpy(model.loss_metrics(batch, noise=noise))["loss"], values["loss"]
    )


def test_loss_scales_are_configurable():
    wm = small_model(loss_scales={"dyn": 0.5, "image": 2.0})
    assert wm.config["loss_scales"] == {
        "rec": 1.0,
        "rew": 1.0,
        "con": 1.0,
        "dyn": 0.5,
        "rep": 0.1,
        "image": 2.0,
    }
    assert wm.loss_scale("loss/image") == 2.0 and wm.loss_scale("loss/dyn") == 0.5
    assert presets.V1_LOSS_SCALES["dyn"] == 0.5


def test_every_weight_gets_a_nonzero_gradient():
    # Free bits off so the KL terms send gradients; after one optimizer step the
    # zero-initialised reward output no longer blocks its hidden layer.
    wm = small_model(free_nats=0.0, seed=3)
    wm.compile(optimizer=kd.optimizers.LaProp(learning_rate=1e-2, warmup=0))
    batch = random_batch(batch=4, length=5)
    wm.fit(batch, batch_size=4, epochs=1, verbose=0)
    variables = wm.trainable_variables
    _, grads = value_and_grad(lambda: wm.loss_metrics(batch)["loss"], variables)
    zero = [v.path for v, g in zip(variables, grads) if not np.any(to_numpy(g))]
    assert not zero, zero
    assert len(variables) > 40


def test_bad_batches_raise_clear_errors(model):
    batch = random_batch()
    missing = {k: v for k, v in batch.items() if k != "reward"}
    with pytest.raises(ValueError, match="missing key.*reward"):
        model(missing)
    wrong_rank = {**batch, "reward": batch["reward"][..., None]}
    with pytest.raises(
        ValueError, match=r"'reward' has shape \(2, 6, 1\), expected \(2, 6\)"
    ):
        model(wrong_rank)
    wrong_size = {**batch, "image": np.zeros((2, 6, 32, 32, 3), np.uint8)}
    with pytest.raises(
        ValueError,
        match=r"'image' has shape \(2, 6, 32, 32, 3\), expected \(2, 6, 16, 16, 3\)",
    ):
        model(wrong_size)
    wrong_dtype = {**batch, "image": batch["image"].astype(np.float32)}
    with pytest.raises(ValueError, match="'image' has dtype float32, expected uint8"):
        model(wrong_dtype)
    wrong_action = {**batch, "action": np.zeros((2, 6, 4), np.float32)}
    with pytest.raises(
        ValueError, match=r"'action' has shape \(2, 6, 4\), expected \(2, 6, 3\)"
    ):
        model(wrong_action)
    with pytest.raises(ValueError, match="dict"):
        model(batch["image"])


def test_disagreeing_time_lengths_name_every_odd_key(model):
    batch = random_batch()
    short = {**batch, "is_first": batch["is_first"][:, :5]}
    with pytest.raises(ValueError, match=r"'is_first' has \(2, 5\), but .*'image'"):
        model.check_batch(short)
    two = {**short, "reward": batch["reward"][:, :4]}
    with pytest.raises(ValueError) as info:
        model.check_batch(two)
    assert "'is_first' has (2, 5)" in str(info.value)
    assert "'reward' has (2, 4)" in str(info.value)


@pytest.mark.parametrize(
    "obs_space, act_space, message",
    [
        ({"image": (64, "x", 3)}, kd.Discrete(3), "'image' has a bad shape"),
        ({"image": (16, 16, 3)}, "three", "act_space must be"),
        ({"image": (16, 16, 3)}, [3], "act_space must be"),
    ],
)
def test_bad_spaces_name_the_argument(obs_space, act_space, message):
    with pytest.raises(ValueError, match=message):
        kd.WorldModel(obs_space, act_space, **SMALL_MODEL)


def test_standard_keras_model_arguments_are_accepted():
    wm = kd.WorldModel(
        {"image": SMALL_IMAGE},
        kd.Discrete(3),
        name="my_world_model",
        trainable=False,
        autocast=True,
        activity_regularizer=None,
        **SMALL_MODEL,
    )
    assert wm.name == "my_world_model" and not wm.trainable
    config = wm.get_config()
    assert config["autocast"] is True and config["name"] == "my_world_model"
    assert kd.WorldModel.from_config(config).name == "my_world_model"
    with pytest.raises(ValueError, match="Unknown world-model hyperparameter"):
        kd.WorldModel({"image": SMALL_IMAGE}, kd.Discrete(3), detr=8, **SMALL_MODEL)


def test_bad_batch_fails_in_fit_before_training(model):
    wm = small_model()
    wm.compile()
    batch = random_batch()
    batch["image"] = batch["image"][:, :, :8]
    before = [to_numpy(w) for w in wm.trainable_weights]
    with pytest.raises(ValueError, match="'image' has shape"):
        wm.fit(batch, batch_size=2, epochs=1, verbose=0)
    after = [to_numpy(w) for w in wm.trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_integer_actions_match_onehot_actions(model):
    batch = random_batch()
    noise = np.random.default_rng(1).uniform(size=(2, 6, 2, 4)).astype(np.float32)
    onehot = to_numpy(model.loss_metrics(batch, noise=noise))
    indices = {**batch, "action": batch["action"].argmax(-1).astype(np.int32)}
    np.testing.assert_allclose(
        to_numpy(model.loss_metrics(indices, noise=noise))["loss"],
        onehot["loss"],
        rtol=1e-6,
    )


def test_vector_and_multi_image_observations():
    obs = {"image": (16, 16, 3), "depth": (16, 16, 1), "state": (4,)}
    wm = kd.WorldModel(obs, kd.Box((2,), -1, 1), **SMALL_MODEL)
    batch = random_batch(actions=2)
    batch["action"] = (
        np.random.default_rng(0).uniform(-1, 1, (2, 6, 2)).astype(np.float32)
    )
    batch["depth"] = np.zeros((2, 6, 16, 16, 1), np.uint8)
    batch["state"] = np.ones((2, 6, 4), np.float32)
    noise = np.random.default_rng(1).uniform(size=(2, 6, 2, 4)).astype(np.float32)
    values = to_numpy(wm.loss_metrics(batch, noise=noise))
    assert {"loss/image", "loss/depth", "loss/state"} <= set(values)
    out = wm(batch, noise=noise)
    state = to_numpy(out["recon"]["state"])
    np.testing.assert_allclose(
        values["loss/state"], ((state - np.log(2)) ** 2).sum(-1).mean(), rtol=1e-4
    )


def test_obs_space_reserved_keys_are_ignored():
    wm = kd.WorldModel(
        {"image": SMALL_IMAGE, "reward": (), "is_first": ()}, 3, **SMALL_MODEL
    )
    assert list(wm.obs_spaces) == ["image"]


def test_keras_file_round_trip(model, tmp_path):
    wm = small_model(seed=5)
    wm.compile()
    batch = random_batch()
    wm.fit(batch, batch_size=2, epochs=1, verbose=0)
    path = str(tmp_path / "wm.keras")
    wm.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kd.WorldModel)
    assert loaded.get_config() == wm.get_config()
    noise = np.random.default_rng(2).uniform(size=(2, 6, 2, 4)).astype(np.float32)
    expected = to_numpy(wm(batch, noise=noise))
    actual = to_numpy(loaded(batch, noise=noise))
    np.testing.assert_array_equal(actual["recon"]["image"], expected["recon"]["image"])
    np.testing.assert_array_equal(actual["post"], expected["post"])
    np.testing.assert_array_equal(actual["reward"], expected["reward"])
    assert isinstance(loaded.optimizer, kd.optimizers.LaProp)
    assert int(loaded.optimizer.iterations.numpy()) == 1


def test_misspelled_or_negative_loss_scales_are_refused():
    space = {"image": (16, 16, 3), "vector": (4,)}
    with pytest.raises(ValueError) as info:
        kd.WorldModel(space, 3, preset="debug", loss_scales={"imgae": 2.0})
    message = str(info.value)
    assert "'imgae'" in message and "did you mean 'image'" in message
    assert message.endswith("valid keys: con, dyn, image, rec, rep, rew, vector.")
    # The agent's scales are not the world model's.
    with pytest.raises(ValueError, match="Unknown loss scale 'policy'"):
        kd.WorldModel(space, 3, preset="debug", loss_scales={"policy": 1.0})
    with pytest.raises(ValueError, match=r"loss_scales\['rep'\] must be .* got -0.1"):
        kd.WorldModel(space, 3, preset="debug", loss_scales={"rep": -0.1})
    with pytest.raises(ValueError, match="loss_scales must be a dict"):
        kd.WorldModel(space, 3, preset="debug", loss_scales=[("rep", 1.0)])
    model = kd.WorldModel(
        space, 3, preset="debug", mults=(4, 4), loss_scales={"vector": 0.5}
    )
    assert model.config["loss_scales"]["vector"] == 0.5
