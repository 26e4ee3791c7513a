"""The RSSM's block-GRU core against an independent numpy implementation.

The reference below is written from `../shared/reference/dreamerv3_semantics.md`
section 1.2, not from our layers: three input branches (Linear, RMSNorm, act)
of deter, flattened stoch and the clipped action; every block sees its own
chunk of deter followed by the shared branches; one block-linear layer with
norm and act; a block-linear gate layer whose output is split inside each
block as `[reset | candidate | update]`; `reset = sigmoid(r)`,
`cand = tanh(reset * c)`, `update = sigmoid(u - 1)`,
`deter' = update * cand + (1 - update) * deter`.
"""

import keras
import numpy as np

from keras_dreamer.layers import RSSM
from keras_dreamer.layers import BlockLinear
from keras_dreamer.spaces import Discrete

DETER, HIDDEN, STOCH, CLASSES, BLOCKS, ACTIONS = 12, 5, 3, 4, 3, 2
EPS = 1e-4  # DreamerV3's rms norm epsilon


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def rms_norm(x, scale):
    return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + EPS) * scale


def block_linear(x, kernel, bias):
    """Block-diagonal linear map: kernel `[g, in/g, out/g]`, groups side by side."""
    groups = kernel.shape[0]
    chunks = np.split(x, groups, axis=-1)
    return np.concatenate([c @ k for c, k in zip(chunks, kernel)], -1) + bias


def reference_core(w, deter, stoch, action):
    stoch = stoch.reshape(len(stoch), -1)
    action = action / np.maximum(1.0, np.abs(action))
    branches = [
        silu(
            rms_norm(
                inp @ w[f"dynin{i}/kernel"] + w[f"dynin{i}/bias"], w[f"dynin{i}/scale"]
            )
        )
        for i, inp in enumerate((deter, stoch, action))
    ]
    shared = np.concatenate(branches, -1)  # 3 * hidden
    per_block = [
        np.concatenate([chunk, shared], -1) for chunk in np.split(deter, BLOCKS, -1)
    ]
    x = np.concatenate(per_block, -1)  # blocks * (deter / blocks + 3 * hidden)
    x = silu(
        rms_norm(
            block_linear(x, w["dynhid0/kernel"], w["dynhid0/bias"]), w["dynhid0/scale"]
        )
    )
    gates = block_linear(x, w["dyngru/kernel"], w["dyngru/bias"])
    size = DETER // BLOCKS
    reset, cand, update = [], [], []
    for block in np.split(gates, BLOCKS, -1):  # [reset | cand | update] per block
        reset.append(block[:, :size])
        cand.append(block[:, size : 2 * size])
        update.append(block[:, 2 * size :])
    reset = sigmoid(np.concatenate(reset, -1))
    cand = np.tanh(reset * np.concatenate(cand, -1))
    update = sigmoid(np.concatenate(update, -1) - 1.0)
    return update * cand + (1.0 - update) * deter


def value(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def randomize(layer, rng):
    for variable in layer.trainable_variables:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))


def test_block_gru_core_matches_the_numpy_reference():
    rssm = RSSM(
        Discrete(ACTIONS),
        deter=DETER,
        hidden=HIDDEN,
        stoch=STOCH,
        classes=CLASSES,
        blocks=BLOCKS,
        act="silu",
        seed=0,
    )
    rssm.build((None, None, 7))
    rng = np.random.default_rng(0)
    randomize(rssm, rng)
    w = {}
    for i, layer in enumerate(rssm.dynin):
        w[f"dynin{i}/kernel"] = value(layer.dense.kernel)
        w[f"dynin{i}/bias"] = value(layer.dense.bias)
        w[f"dynin{i}/scale"] = value(layer.norm.scale)
    w["dynhid0/kernel"] = value(rssm.dynhid[0].kernel)
    w["dynhid0/bias"] = value(rssm.dynhid[0].bias)
    w["dynhid0/scale"] = value(rssm.dynhidnorm[0].scale)
    w["dyngru/kernel"] = value(rssm.dyngru.kernel)
    w["dyngru/bias"] = value(rssm.dyngru.bias)
    assert w["dynhid0/kernel"].shape == (
        BLOCKS,
        (DETER + 3 * HIDDEN * BLOCKS) // BLOCKS,
        DETER // BLOCKS,
    )
    assert w["dyngru/kernel"].shape == (BLOCKS, DETER // BLOCKS, 3 * DETER // BLOCKS)

    deter = rng.normal(size=(4, DETER)).astype("float32")
    stoch = rng.random((4, STOCH, CLASSES)).astype("float32")
    action = rng.normal(0.0, 2.0, (4, ACTIONS)).astype("float32")  # some |a| > 1
    expected = reference_core(w, deter, stoch, action)
    actual = np.asarray(keras.ops.convert_to_numpy(rssm.core(deter, stoch, action)))
    np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=2e-5)


def test_block_linear_grouped_call_equals_the_dense_call_on_the_concatenation():
    layer = BlockLinear(6, blocks=3)
    grouped_width, shared_width = 2, 5
    layer.build((None, 3 * (grouped_width + shared_width)))
    rng = np.random.default_rng(1)
    randomize(layer, rng)
    grouped = rng.normal(size=(4, 3, grouped_width)).astype("float32")
    shared = rng.normal(size=(4, shared_width)).astype("float32")
    concatenated = np.concatenate(
        [np.concatenate([grouped[:, g], shared], -1) for g in range(3)], -1
    )
    dense = value(layer(concatenated))
    np.testing.assert_allclose(
        value(layer.call_grouped(grouped, shared)), dense, rtol=1e-5, atol=1e-6
    )
    # And the dense call is the block-diagonal map of the reference.
    kernel = value(layer.kernel)
    bias = value(layer.bias)
    np.testing.assert_allclose(
        dense, block_linear(concatenated, kernel, bias), rtol=1e-5, atol=1e-6
    )
