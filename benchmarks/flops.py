"""FLOP counts of an update and the float32 matmul ceiling, for the speed benchmarks.

Two counts of the floating-point operations of one update, both counting only
matrix products and convolutions (2 FLOPs per multiply-add; elementwise work,
norms, activations and the optimizer's per-parameter arithmetic are left out,
as in the reference's figure):

* `jaxpr_flops`: **counted** from the JAX program of the whole train step
  (`model.train_step` traced with `jax.make_jaxpr`: forward, the backward pass
  exactly as JAX differentiates it, the optimizer), every `dot_general` and
  `conv_general_dilated`, a `scan` body counted `length` times. It needs the
  JAX backend; `count_update_flops` runs it in a fresh JAX process, so a
  TensorFlow benchmark gets the same number (the model is the same).
* `world_model_flops`: **analytic**, from the world model's hyperparameters
  and the batch shape: the forward pass of every layer, times 3 for training
  (the backward pass computes an input gradient and a weight gradient, each as
  costly as the forward product), less the input gradient of the first
  convolution (the images are not differentiated). A cross-check of the
  counted number for the world model.

The decoder's convolutions run on the low-resolution input with folded
kernels (`keras_dreamer.layers.conv.upsample_conv2d_same`: 36 multiply-adds per input
pixel and channel pair for a 5x5 kernel where the reference's convolution of
the upsampled image does 100), and the encoder's convolution of the image on
its space-to-depth rearrangement (`conv2d_same_pooled_blocks`: 1.44x the
multiply-adds, much faster kernels). Both counts are of what keras-dreamer
computes; `world_model_flops(...)["reference_update"]` is the same update
counted as the reference computes it. Benchmarks print GFLOP/s of both: "executed" (this package's
FLOPs per second) and "reference-algorithm" (the reference's FLOPs for the same
update, per second of ours), the latter comparable with the reference's own
fraction of the ceiling.

`matmul_ceiling` measures the float32 ceiling in the calling process, on its
Keras backend: a jitted (JAX) or `tf.function` (TensorFlow) 2048 x 2048 matmul,
the best of several calls, in GFLOP/s. A benchmark reports its achieved
GFLOP/s as a fraction of that ceiling, measured in the same process.

    python benchmarks/flops.py                       # counts for size1m, size12m
    python benchmarks/flops.py --presets size12m --kind agent
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

# -------------------------------------------------------------- the ceiling


def matmul_ceiling(n=2048, repeats=8):
    """The float32 matmul ceiling of this process's Keras backend, in GFLOP/s.

    Args:
        n: the square matrix size.
        repeats: timed calls after a warm-up call.

    Returns:
        dict with `gflops` (from the fastest call: a ceiling is what the
        machine can reach), `gflops_median`, `n` and `backend`.
    """
    import keras

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        x = jnp.asarray(a)
        f = jax.jit(jnp.matmul)

        def run():
            f(x, x).block_until_ready()

    elif backend == "torch":
        import torch

        x = torch.from_numpy(a)

        def run():
            torch.matmul(x, x)

    else:
        import tensorflow as tf

        x = tf.constant(a)
        f = tf.function(tf.linalg.matmul)

        def run():
            # CPU ops run synchronously; reading one element waits anyway.
            f(x, x)[0, 0].numpy()

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    flop = 2.0 * n**3
    return {
        "backend": backend,
        "n": n,
        "gflops": round(flop / min(times) / 1e9, 1),
        "gflops_median": round(flop / float(np.median(times)) / 1e9, 1),
    }


# ------------------------------------------------------ counting a jaxpr


def _prod(values):
    out = 1
    for v in values:
        out *= int(v)
    return out


def _sub_jaxprs(value):
    """The jaxprs held by an equation parameter (a jaxpr, a closed one, lists)."""
    # Duck-typed: a Jaxpr has `eqns`; a ClosedJaxpr holds one in `jaxpr`.
    if hasattr(value, "eqns"):
        return [value]
    if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        return [value.jaxpr]
    if isinstance(value, (list, tuple)):
        found = []
        for item in value:
            found.extend(_sub_jaxprs(item))
        return found
    return []


def jaxpr_flops(jaxpr):
    """Matmul and convolution FLOPs of a jaxpr (`jax.make_jaxpr(f)(...)`).

    Args:
        jaxpr: a `ClosedJaxpr` or `Jaxpr`.

    Returns:
        dict with `flops` (total), `dot` and `conv` (their parts) and
        `while_loops` (the number of `while` loops met, whose bodies are
        counted once: their trip count is unknown; a `scan` is exact).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    totals = {"dot": 0, "conv": 0, "while_loops": 0}
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (contract_lhs, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            totals["dot"] += 2 * _prod(out) * _prod(lhs[d] for d in contract_lhs)
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out = eqn.outvars[0].aval.shape
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec
            per_output = rhs[rhs_spec[1]] * _prod(rhs[d] for d in rhs_spec[2:])
            totals["conv"] += 2 * _prod(out) * per_output
        times = 1
        if name == "scan":
            times = int(eqn.params["length"])
        if name == "while":
            totals["while_loops"] += 1
        subs = []
        for key, value in eqn.params.items():
            if name == "cond" and key == "branches":
                # The costliest branch.
                counts = [jaxpr_flops(b) for b in _sub_jaxprs(value)]
                if counts:
                    best = max(counts, key=lambda c: c["dot"] + c["conv"])
                    for k in totals:
                        totals[k] += best[k]
                continue
            subs.extend(_sub_jaxprs(value))
        for sub in subs:
            inner = jaxpr_flops(sub)
            for k in totals:
                totals[k] += times * inner[k] if k != "while_loops" else inner[k]
    totals["flops"] = totals["dot"] + totals["conv"]
    return totals


def train_step_flops(model, batch):
    """Counted FLOPs of one `fit` step of a compiled Keras model (JAX backend).

    Traces `model.train_step(state, batch)` (forward, gradients, optimizer)
    without running it.

    Args:
        model: a compiled `kd.WorldModel` or `kd.Agent` (built).
        batch: a batch dict of numpy arrays.

    Returns:
        The `jaxpr_flops` dict of the step.
    """
    import jax

    model.optimizer.build(model.trainable_variables)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    jaxpr = jax.make_jaxpr(model.train_step)(state, dict(batch))
    return jaxpr_flops(jaxpr)


# ----------------------------------------------------- the analytic count


def world_model_flops(config, image_shape, act_width, batch, length, vector_width=0):
    """Analytic matmul and convolution FLOPs of a world-model update.

    Args:
        config: the world model's resolved hyperparameters (`wm.config`).
        image_shape: (H, W, C) of the image input, or None.
        act_width: width of the action vector.
        batch: B.
        length: T.
        vector_width: width of the concatenated vector observations (0: none).

    Returns:
        dict with `forward` (FLOPs of the forward pass), `update` (forward and
        backward) and the forward FLOPs per part (`encoder`, `rssm`,
        `decoder`, `heads`).
    """
    from keras_dreamer.layers.conv import pool_conv_on_blocks

    c = config
    n = batch * length
    mac = {"encoder": 0, "rssm": 0, "decoder": 0, "heads": 0}
    k2 = c["kernel"] ** 2
    first_conv = first_reference = 0
    token = 0
    reference_extra = 0  # MACs: the reference's upsampled decoder, plain encoder
    if image_shape is not None:
        h, w, ch = image_shape
        for i, mult in enumerate(c["mults"]):
            out = c["depth"] * mult
            conv = reference_conv = h * w * k2 * ch * out
            if pool_conv_on_blocks(h, w, ch):
                # PoolConv2D: a taps x taps convolution of the space-to-depth
                # image, 4x the channels in and out, at a quarter the pixels.
                conv = (h // 2) * (w // 2) * folded_taps(c["kernel"]) * 16 * ch * out
            mac["encoder"] += conv
            reference_extra += reference_conv - conv
            if i == 0:
                first_conv, first_reference = conv, reference_conv
            h, w, ch = h // 2, w // 2, out
        token += h * w * ch
    if vector_width:
        width = vector_width
        for _ in range(c["mlp_layers"]):
            mac["encoder"] += width * c["units"]
            width = c["units"]
        token += c["units"]
    deter, hidden, blocks = c["deter"], c["hidden"], c["blocks"]
    flat = c["stoch"] * c["classes"]
    # Core: three input branches, the block layers, the GRU gates.
    mac["rssm"] += hidden * (deter + flat + act_width)
    mac["rssm"] += deter * deter // blocks + 3 * hidden * deter
    mac["rssm"] += (c["dynlayers"] - 1) * deter * deter // blocks
    mac["rssm"] += deter * 3 * deter // blocks
    # Posterior inside the loop, prior over all posterior states after it.
    mac["rssm"] += (deter + token) * hidden + (c["obslayers"] - 1) * hidden**2
    mac["rssm"] += hidden * flat
    mac["rssm"] += deter * hidden + (c["imglayers"] - 1) * hidden**2 + hidden * flat
    if image_shape is not None:
        h, w, ch = image_shape
        stages = len(c["mults"])
        minres = (h // 2**stages) * (w // 2**stages)
        depths = [c["depth"] * m for m in c["mults"]][::-1]
        units_out = minres * depths[0]
        mac["decoder"] += deter * units_out // c["bspace"]
        mac["decoder"] += flat * 2 * c["units"] + 2 * c["units"] * units_out
        taps = folded_taps(c["kernel"])
        res = minres
        for cin, cout in zip(depths, [*depths[1:], ch]):
            # Folded: a taps x taps convolution at the low resolution with 4x
            # the outputs; the reference convolves the 4x larger image.
            mac["decoder"] += res * taps * 4 * cin * cout
            reference_extra += (4 * res) * k2 * cin * cout - res * taps * 4 * cin * cout
            res *= 4
    if vector_width:
        width = deter + flat
        for _ in range(c["mlp_layers"]):
            mac["decoder"] += width * c["units"]
            width = c["units"]
        mac["decoder"] += width * vector_width
    feat = deter + flat
    head = feat * c["units"] + (c["head_layers"] - 1) * c["units"] ** 2
    mac["heads"] += head + c["units"] * c["bins"]
    mac["heads"] += head + c["units"]
    forward = 2 * n * sum(mac.values())
    update = 3 * forward - 2 * n * first_conv
    return {
        "forward": forward,
        "update": update,
        "reference_update": update
        + 3 * 2 * n * reference_extra
        - 2 * n * (first_reference - first_conv),
        **{k: 2 * n * v for k, v in mac.items()},
    }


def folded_taps(kernel):
    """Kernel taps (rows x columns) of a folded `kernel` x `kernel`
    convolution (`keras_dreamer.layers.conv.upsample_fold`): 9 for 5x5."""
    from keras_dreamer.layers.conv import upsample_fold

    return upsample_fold(kernel)[0].shape[1] ** 2


def reference_flops(count):
    """The reference algorithm's FLOPs for a `count_update_flops` result:
    the counted FLOPs plus the reference's extra work (its decoder convolves
    upsampled images; its encoder convolves the image itself)."""
    analytic = count.get("analytic_world_model", {})
    counted = count.get("counted", {}).get("flops")
    if counted is None or "reference_update" not in analytic:
        return None
    return counted + analytic["reference_update"] - analytic["update"]


# ------------------------------------------- counting in a fresh JAX process

COUNT_WORKER = r"""
import json, os, sys
sys.path.insert(0, os.environ["KD_ROOT"])
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import numpy as np
import keras
import keras_dreamer as kd
from flops import train_step_flops, world_model_flops
from worker_utils import synthetic_batch

args = json.loads(sys.argv[1])
B, T, size = args["batch"], args["length"], args["size"]
batch = synthetic_batch(B, T, size=size, actions=args["actions"])
cls = kd.Agent if args["kind"] == "agent" else kd.WorldModel
model = cls({"image": (size, size, 3)}, kd.Discrete(args["actions"]),
            preset=args["preset"], **args["overrides"])
model.compile()
counted = train_step_flops(model, batch)
wm = model.world_model if args["kind"] == "agent" else model
analytic = world_model_flops(wm.config, (size, size, 3), args["actions"], B, T)
print("RESULT " + json.dumps({**args, "counted": counted, "analytic_world_model": analytic}))
"""


def count_update_flops(
    kind="world_model",
    preset="size12m",
    batch=16,
    length=64,
    size=64,
    actions=18,
    overrides=None,
    timeout=1200,
):
    """FLOPs of one update, counted from its jaxpr in a fresh JAX process.

    Returns:
        The worker's dict: `counted` (see `jaxpr_flops`) and
        `analytic_world_model` (see `world_model_flops`), or an `error`.
    """
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import run_worker

    config = {
        "backend": "jax",
        "kind": kind,
        "preset": preset,
        "batch": batch,
        "length": length,
        "size": size,
        "actions": actions,
        "overrides": overrides or {},
    }
    # XLA's own convolution gradients: the count stays that of the algorithm
    # (the matmul kernel gradient does the same products, grouped otherwise).
    return run_worker(
        COUNT_WORKER, config, timeout, env={"KERAS_DREAMER_CONV_GRAD": "xla"}
    )


def gflops_line(flop, seconds, ceiling):
    """`(GFLOP/s, percent of the ceiling)`, rounded, for a timed update."""
    if not flop or not seconds or not ceiling:
        return None, None
    rate = flop / seconds / 1e9
    return round(rate, 1), round(100.0 * rate / ceiling, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["size1m", "size12m"])
    parser.add_argument(
        "--kind", choices=["world_model", "agent"], default="world_model"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    for preset in args.presets:
        result = count_update_flops(
            args.kind, preset, args.batch, args.length, args.size
        )
        print(json.dumps(result))
        if "counted" in result:
            counted = result["counted"]["flops"] / 1e9
            analytic = result["analytic_world_model"]["update"] / 1e9
            print(
                f"{preset} {args.kind} B{args.batch}xT{args.length} {args.size}x"
                f"{args.size}: counted {counted:,.1f} GFLOP per update; analytic "
                f"world model {analytic:,.1f} GFLOP "
                f"({'n/a' if math.isnan(analytic) else f'{counted / analytic:.3f}'})"
            )


if __name__ == "__main__":
    main()
