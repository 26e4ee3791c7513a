"""The RSSM core and `BlockLinear` against independent numpy code.

The reference step is written here from the semantics of DreamerV3's block
GRU (`dreamerv3_semantics.md` section 1.2), not from the layer's code: the
three input branches, each block's own deter chunk before the shared input,
the gates split inside each block as `[reset | candidate | update]`, and
`update = sigmoid(u - 1)`.
"""

import numpy as np

from keras_dreamer.layers import RSSM
from keras_dreamer.layers import BlockLinear
from tests.helpers import to_numpy

DETER, HIDDEN, STOCH, CLASSES, BLOCKS, ACTIONS = 12, 5, 3, 4, 3, 2


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def rms_norm(x, scale, epsilon):
    return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + epsilon) * scale


def weights(layer):
    return {
        w.path.split("/")[-1]: to_numpy(w).astype(np.float64) for w in layer.weights
    }


def dense_norm_act(layer, x):
    dense, norm = weights(layer.dense), weights(layer.norm)
    y = x @ dense["kernel"] + dense.get("bias", 0.0)
    return silu(rms_norm(y, norm["scale"], layer.norm.epsilon))


def block_linear(layer, x):
    """Block-diagonal matmul written as a loop over blocks."""
    w = weights(layer)
    blocks, size_in, size_out = w["kernel"].shape
    out = np.zeros((x.shape[0], blocks * size_out))
    for g in range(blocks):
        out[:, g * size_out : (g + 1) * size_out] = (
            x[:, g * size_in : (g + 1) * size_in] @ w["kernel"][g]
        )
    return out + w.get("bias", 0.0)


def reference_core(rssm, deter, stoch, action):
    n, chunk = deter.shape[0], DETER // BLOCKS
    stoch = stoch.reshape(n, -1)
    action = action / np.maximum(1.0, np.abs(action))
    x0 = dense_norm_act(rssm.dynin[0], deter)
    x1 = dense_norm_act(rssm.dynin[1], stoch)
    x2 = dense_norm_act(rssm.dynin[2], action)
    shared = np.concatenate([x0, x1, x2], -1)
    inputs = np.concatenate(
        [
            np.concatenate([deter[:, g * chunk : (g + 1) * chunk], shared], -1)
            for g in range(BLOCKS)
        ],
        -1,
    )
    norm = weights(rssm.dynhidnorm[0])["scale"]
    hidden = silu(
        rms_norm(block_linear(rssm.dynhid[0], inputs), norm, rssm.dynhidnorm[0].epsilon)
    )
    gates = block_linear(rssm.dyngru, hidden)  # [n, blocks * 3 * chunk]
    reset, cand, update = [], [], []
    for g in range(BLOCKS):
        block = gates[:, g * 3 * chunk : (g + 1) * 3 * chunk]
        reset.append(block[:, :chunk])
        cand.append(block[:, chunk : 2 * chunk])
        update.append(block[:, 2 * chunk :])
    reset = sigmoid(np.concatenate(reset, -1))
    cand = np.tanh(reset * np.concatenate(cand, -1))
    update = sigmoid(np.concatenate(update, -1) - 1.0)
    return update * cand + (1.0 - update) * deter


def randomize(layer, rng):
    layer.set_weights(
        [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()]
    )


def test_rssm_core_matches_a_numpy_block_gru_step():
    rng = np.random.default_rng(0)
    rssm = RSSM(
        ACTIONS,
        deter=DETER,
        hidden=HIDDEN,
        stoch=STOCH,
        classes=CLASSES,
        blocks=BLOCKS,
        seed=1,
    )
    rssm.build((None, None, 7))
    randomize(rssm, rng)  # biases and norm scales too, so none is trivial
    deter = rng.normal(size=(4, DETER)).astype(np.float32)
    stoch = np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, (4, STOCH))]
    action = rng.normal(0.0, 2.0, (4, ACTIONS)).astype(np.float32)  # some |a| > 1
    got = to_numpy(rssm.core(deter, stoch, action))
    want = reference_core(
        rssm, deter.astype(np.float64), stoch, action.astype(np.float64)
    )
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    # A swapped gate order or a missing `- 1` would not match.
    assert not np.allclose(got, deter, atol=1e-3)


def test_block_linear_grouped_call_equals_the_dense_call_on_the_concatenation():
    rng = np.random.default_rng(1)
    layer = BlockLinear(12, blocks=3)
    grouped_width, shared_width = 2, 5
    layer.build((None, 3 * (grouped_width + shared_width)))
    randomize(layer, rng)
    grouped = rng.normal(size=(4, 3, grouped_width)).astype(np.float32)
    shared = rng.normal(size=(4, shared_width)).astype(np.float32)
    concatenated = np.concatenate(
        [np.concatenate([grouped[:, g], shared], -1) for g in range(3)], -1
    )
    dense = to_numpy(layer(concatenated))
    np.testing.assert_allclose(
        to_numpy(layer.call_grouped(grouped, shared)), dense, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        dense,
        block_linear(layer, concatenated.astype(np.float64)),
        rtol=1e-5,
        atol=1e-5,
    )
