"""Replay context: a batch with one leading step whose stored latent is the carry.

The reference's own numbers for such a batch are checked in
`test_reference_parity.py` (the `context` case); these tests cover the
batch path itself: validation, a compiled train step, and that a context
of zeros is the same as no context.
"""

import numpy as np
import pytest

import keras_dreamer as kd
from tests.helpers import SMALL_MODEL
from tests.helpers import Batches
from tests.helpers import RecordLogs
from tests.helpers import random_batch
from tests.helpers import to_numpy

DETER, STOCH, CLASSES = 8, 2, 4  # the debug preset's RSSM


def with_context(batch, seed=0):
    """`batch` with each step's stored latent (random)."""
    rng = np.random.default_rng(seed)
    b, t = batch["is_first"].shape
    stoch = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, (b, t, STOCH))]
    return {
        **batch,
        "latent/deter": np.tanh(rng.normal(size=(b, t, DETER))).astype("float32"),
        "latent/stoch": stoch,
    }


@pytest.fixture(scope="module")
def model():
    wm = kd.WorldModel({"image": (16, 16, 3)}, kd.Discrete(3), **SMALL_MODEL)
    wm.compile()
    return wm


def test_context_batches_are_checked(model):
    batch = with_context(random_batch(batch=2, length=6))
    assert model.check_batch(batch) == (2, 6)
    partial = dict(batch)
    del partial["latent/stoch"]
    with pytest.raises(
        ValueError, match=r"needs both \['latent/deter', 'latent/stoch'\]"
    ):
        model.check_batch(partial)
    wrong = {**batch, "latent/stoch": batch["latent/stoch"][..., :3]}
    with pytest.raises(ValueError, match=r"'latent/stoch' has shape \(2, 6, 2, 3\)"):
        model.check_batch(wrong)
    short = with_context(random_batch(batch=2, length=1))
    with pytest.raises(ValueError, match="need at least 2"):
        model.check_batch(short)


def test_zero_context_is_a_fresh_start(model):
    """Stored zeros and a zero action before the first trained step are what
    a batch without context starts from."""
    batch = with_context(random_batch(batch=2, length=6, seed=1))
    batch["latent/deter"][:, 0] = 0.0
    batch["latent/stoch"][:, 0] = 0.0
    batch["action"][:, 0] = 0.0
    batch["is_first"][:] = False
    steps = {k: v[:, 1:] for k, v in batch.items() if not k.startswith("latent/")}
    noise = np.random.default_rng(2).uniform(size=(2, 5, STOCH, CLASSES))
    with_ctx = to_numpy(model(batch, noise=noise))
    fresh = to_numpy(model(steps, noise=noise))
    np.testing.assert_allclose(with_ctx["deter"], fresh["deter"], atol=1e-6)
    np.testing.assert_allclose(with_ctx["post"], fresh["post"], atol=1e-5)
    # ...and a stored latent does change the first trained step.
    batch["latent/deter"][:, 0] = 0.5
    moved = to_numpy(model(batch, noise=noise))
    assert np.abs(moved["deter"][:, 0] - fresh["deter"][:, 0]).max() > 1e-3


def test_fit_trains_on_context_batches(model):
    batches = [
        with_context(random_batch(batch=2, length=6, seed=i), i) for i in range(2)
    ]
    logs = RecordLogs()
    model.fit(Batches(batches, 3), epochs=1, verbose=0, callbacks=[logs])
    assert len(logs.logs) == 3
    assert all(np.isfinite(entry["loss"]) for entry in logs.logs)
    # The context step is not a trained frame: B * T of the 5 trained steps.
    assert logs.logs[-1]["frames"] == 2 * 5
