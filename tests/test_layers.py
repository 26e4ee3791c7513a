import keras
import numpy as np
import pytest
from keras import ops

import keras_dreamer as kd
from keras_dreamer.layers import RSSM
from keras_dreamer.layers import BlockLinear
from keras_dreamer.layers import ContinueHead
from keras_dreamer.layers import Decoder
from keras_dreamer.layers import DenseNormAct
from keras_dreamer.layers import Encoder
from keras_dreamer.layers import RewardHead
from keras_dreamer.layers import RMSNorm
from tests.helpers import to_numpy

RSSM_KW = {"deter": 16, "hidden": 6, "stoch": 3, "classes": 4, "blocks": 4, "seed": 1}


def assert_config_round_trip(layer):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"keras_dreamer>{layer.__class__.__name__}"
    return clone


def test_rmsnorm_normalises_in_float32():
    x = np.array([[3.0, 4.0, 0.0, 0.0]], np.float32)
    layer = RMSNorm()
    y = to_numpy(layer(x))
    np.testing.assert_allclose(y, x / np.sqrt(np.mean(x**2) + 1e-4), rtol=1e-6)
    assert [w.shape for w in layer.weights] == [(4,)]
    half = RMSNorm(dtype="mixed_bfloat16")
    assert keras.backend.standardize_dtype(half(x).dtype) == "bfloat16"
    assert half.scale.dtype == "float32"
    assert_config_round_trip(layer)


def test_block_linear_is_block_diagonal():
    layer = BlockLinear(6, blocks=3)
    x = np.zeros((2, 9), np.float32)
    x[:, 3:6] = 1.0  # only the second block's inputs
    y = to_numpy(layer(x))
    assert y.shape == (2, 6)
    assert layer.kernel.shape == (3, 3, 2)
    np.testing.assert_allclose(y[:, [0, 1, 4, 5]], 0.0)
    kernel = to_numpy(layer.kernel)
    np.testing.assert_allclose(y[0, 2:4], kernel[1].sum(0), rtol=1e-6)
    assert layer(np.zeros((4, 5, 9), np.float32)).shape == (4, 5, 6)
    clone = assert_config_round_trip(layer)
    with pytest.raises(ValueError, match="divisible"):
        BlockLinear(7, blocks=3)
    with pytest.raises(ValueError, match="divisible"):
        clone(np.zeros((1, 10), np.float32))


def test_dense_norm_act_shapes():
    layer = DenseNormAct(5)
    assert layer(np.ones((3, 2, 4), np.float32)).shape == (3, 2, 5)
    assert len(layer.trainable_weights) == 3  # kernel, bias, norm scale
    assert_config_round_trip(layer)


def test_encoder_images_and_vectors():
    obs = {"image": (16, 16, 3), "depth": (16, 16), "vec": (5,), "mode": kd.Discrete(4)}
    enc = Encoder(obs, depth=2, mults=(2, 3), units=7, layers=2)
    batch = {
        "image": np.zeros((2, 3, 16, 16, 3), np.uint8),
        "depth": np.zeros((2, 3, 16, 16), np.uint8),
        "vec": np.ones((2, 3, 5), np.float32),
        "mode": np.ones((2, 3), np.int32),
    }
    tokens = enc(batch)
    assert tokens.shape == (2, 3, 4 * 4 * 6 + 7)
    assert enc.image_keys == ["depth", "image"] and enc.vector_keys == ["mode", "vec"]
    conv0 = enc.convs[0]
    assert tuple(conv0.kernel.shape) == (5, 5, 4, 4)  # 3 + 1 channels
    assert_config_round_trip(enc)


def test_encoder_rejects_bad_image_sizes():
    with pytest.raises(ValueError, match="3..16"):
        Encoder({"image": (64, 64, 3)}, depth=2, mults=(2,)).build()
    with pytest.raises(ValueError, match="halved"):
        Encoder({"image": (20, 20, 3)}, depth=2, mults=(2, 2, 2)).build()


def test_decoder_images_and_vectors():
    obs = {"image": (16, 16, 3), "vec": (5,), "mode": kd.Discrete(4)}
    dec = Decoder(obs, depth=2, mults=(4, 4), units=8, layers=1, bspace=4)
    deter, stoch = np.ones((2, 3, 8), np.float32), np.ones((2, 3, 2, 4), np.float32)
    out = dec(deter, stoch)
    assert out["image"].shape == (2, 3, 16, 16, 3)
    assert out["vec"].shape == (2, 3, 5)
    assert out["mode"].shape == (2, 3, 4)
    image = to_numpy(out["image"])
    assert image.min() >= 0.0 and image.max() <= 1.0  # sigmoid output
    assert dec.space_proj.kernel.shape == (4, 2, 4 * 4 * 8 // 4)
    assert_config_round_trip(dec)
    with pytest.raises(ValueError, match="bspace"):
        Decoder({"image": (16, 16, 3)}, depth=2, mults=(2, 2), bspace=8)


def test_heads():
    reward = RewardHead(units=8, bins=255)
    logits = reward(np.ones((2, 3, 6), np.float32))
    assert logits.shape == (2, 3, 255)
    np.testing.assert_array_equal(to_numpy(reward.predict_value(logits)), 0.0)
    np.testing.assert_array_equal(to_numpy(reward.out.kernel), 0.0)
    cont = ContinueHead(units=8)
    logit = cont(np.ones((2, 3, 6), np.float32))
    assert logit.shape == (2, 3)
    target = to_numpy(cont.target(np.array([True, False])))
    np.testing.assert_allclose(target, [0.0, 1 - 1 / 333], rtol=1e-6)
    assert_config_round_trip(reward)
    assert_config_round_trip(cont)


def make_rssm(act_space=3, **kwargs):
    rssm = RSSM(act_space, **{**RSSM_KW, **kwargs})
    rssm.build((None, None, 10))
    return rssm


def test_rssm_shapes_and_weights():
    rssm = make_rssm()
    carry = rssm.initial(2)
    assert tuple(carry["deter"].shape) == (2, 16)
    assert tuple(carry["stoch"].shape) == (2, 3, 4)
    np.testing.assert_array_equal(to_numpy(carry["deter"]), 0.0)
    tokens = np.random.default_rng(0).normal(size=(2, 5, 10)).astype(np.float32)
    action = np.eye(3, dtype=np.float32)[[[0, 1, 2, 0, 1]] * 2]
    carry, feat = rssm.observe(carry, tokens, action, np.zeros((2, 5), bool))
    assert tuple(feat["deter"].shape) == (2, 5, 16)
    assert tuple(feat["stoch"].shape) == (2, 5, 3, 4)
    assert tuple(feat["logit"].shape) == (2, 5, 3, 4)
    stoch = to_numpy(feat["stoch"])
    np.testing.assert_array_equal(stoch.sum(-1), 1.0)  # one-hot samples
    carry, img = rssm.imagine(carry, action[:, :4])
    assert tuple(img["stoch"].shape) == (2, 4, 3, 4)
    assert tuple(img["action"].shape) == (2, 4, 3)
    shapes = {w.path.split("/", 1)[1]: tuple(w.shape) for w in rssm.trainable_weights}
    assert shapes["dynhid0/kernel"] == (4, 16 // 4 + 3 * 6, 4)
    assert shapes["dyngru/kernel"] == (4, 4, 12)
    assert shapes["obs0/kernel"] == (16 + 10, 6)
    assert_config_round_trip(rssm)


def test_rssm_imagine_with_a_policy_callable():
    rssm = make_rssm()
    carry = rssm.initial(2)

    def policy(state):
        index = ops.argmax(ops.reshape(state["stoch"], (2, -1))[:, :3], -1)
        return ops.one_hot(index, 3)

    carry, feat = rssm.imagine(carry, policy, length=4)
    actions = to_numpy(feat["action"])
    assert actions.shape == (2, 4, 3)
    np.testing.assert_array_equal(actions.sum(-1), 1.0)
    with pytest.raises(ValueError, match="length"):
        rssm.imagine(carry, policy)


def test_rssm_accepts_discrete_indices_and_scales_continuous_actions():
    rssm = make_rssm()
    onehot = to_numpy(rssm.prepare_action(np.array([2, 0])))
    np.testing.assert_array_equal(onehot, [[0, 0, 1], [1, 0, 0]])
    box = make_rssm(kd.Box((2,), -10, 10))
    carry = box.initial(1)
    noise = np.full((1, 3, 4), 0.5, np.float32)
    big = box.img_step(carry, np.array([[5.0, -1.0]], np.float32), noise)[1]
    clipped = box.img_step(carry, np.array([[1.0, -1.0]], np.float32), noise)[1]
    np.testing.assert_allclose(
        to_numpy(big["deter"]), to_numpy(clipped["deter"]), rtol=1e-6
    )


def test_rssm_step_after_is_first_equals_step_from_fresh_carry():
    rssm = make_rssm()
    rng = np.random.default_rng(1)
    used = {
        "deter": rng.normal(size=(2, 16)).astype(np.float32),
        "stoch": np.eye(4, dtype=np.float32)[rng.integers(0, 4, (2, 3))],
    }
    tokens = rng.normal(size=(2, 10)).astype(np.float32)
    action = np.eye(3, dtype=np.float32)[[1, 2]]
    noise = rng.uniform(size=(2, 3, 4)).astype(np.float32)
    _, reset = rssm.obs_step(used, action, tokens, np.array([True, True]), noise)
    _, fresh = rssm.obs_step(
        rssm.initial(2), np.zeros_like(action), tokens, np.array([False, False]), noise
    )
    for key in ("deter", "stoch", "logit"):
        np.testing.assert_allclose(
            to_numpy(reset[key]), to_numpy(fresh[key]), rtol=1e-5, atol=1e-6
        )
    _, kept = rssm.obs_step(used, action, tokens, np.array([False, False]), noise)
    assert not np.allclose(to_numpy(kept["deter"]), to_numpy(fresh["deter"]))


def test_rssm_observe_equals_a_loop_of_obs_step():
    rssm = make_rssm()
    rng = np.random.default_rng(2)
    batch, length = 2, 6
    tokens = rng.normal(size=(batch, length, 10)).astype(np.float32)
    action = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (batch, length))]
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    is_first[1, 3] = True
    noise = rng.uniform(size=(batch, length, 3, 4)).astype(np.float32)
    carry, feat = rssm.observe(
        rssm.initial(batch), tokens, action, is_first, noise=noise
    )
    loop_carry = rssm.initial(batch)
    for t in range(length):
        loop_carry, step = rssm.obs_step(
            loop_carry, action[:, t], tokens[:, t], is_first[:, t], noise[:, t]
        )
        for key in ("deter", "stoch", "logit"):
            np.testing.assert_allclose(
                to_numpy(feat[key])[:, t], to_numpy(step[key]), rtol=1e-5, atol=1e-5
            )
    np.testing.assert_allclose(
        to_numpy(carry["deter"]), to_numpy(loop_carry["deter"]), rtol=1e-5, atol=1e-5
    )


def test_rssm_imagine_equals_a_loop_of_img_step():
    rssm = make_rssm()
    rng = np.random.default_rng(3)
    actions = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (2, 4))]
    noise = rng.uniform(size=(2, 4, 3, 4)).astype(np.float32)
    start = {
        "deter": rng.normal(size=(2, 16)).astype(np.float32),
        "stoch": rssm.initial(2)["stoch"],
    }
    _, feat = rssm.imagine(start, actions, noise=noise)
    carry = start
    for t in range(4):
        carry, step = rssm.img_step(carry, actions[:, t], noise[:, t])
        np.testing.assert_allclose(
            to_numpy(feat["deter"])[:, t], to_numpy(step["deter"]), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            to_numpy(feat["logit"])[:, t], to_numpy(step["logit"]), rtol=1e-5, atol=1e-5
        )


def test_rssm_kl_losses_apply_free_bits_per_step():
    rssm = make_rssm()
    logits = np.log(np.full((2, 5, 3, 4), 0.25, np.float32))
    other = logits.copy()
    other[1, 2] = np.log(np.array([0.97, 0.01, 0.01, 0.01], np.float32))
    losses = to_numpy(rssm.kl_losses(other, logits, free_nats=1.0))
    np.testing.assert_allclose(losses["dyn"][0], 1.0)  # KL 0 -> clipped to 1
    kl = 3 * (0.97 * np.log(0.97 / 0.25) + 3 * 0.01 * np.log(0.01 / 0.25))
    np.testing.assert_allclose(losses["dyn"][1, 2], kl, rtol=1e-4)
    np.testing.assert_allclose(losses["rep"][1, 2], kl, rtol=1e-4)
    np.testing.assert_allclose(losses["rep"][1, 1], 1.0)
    np.testing.assert_allclose(losses["dyn_ent"][0, 0], 3 * np.log(4), rtol=1e-5)
    raw = to_numpy(rssm.kl_losses(other, logits, free_nats=0.0))
    np.testing.assert_allclose(raw["dyn"][0], 0.0, atol=1e-6)
