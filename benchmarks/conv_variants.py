"""JAX CPU convolutions: layouts, XLA flags and dtypes on the model's own shapes.

Times one 5x5 'same' convolution forward and forward + backward (gradients
of the input and the kernel) with `jax.lax.conv_general_dilated`, for the
convolution shapes of the size12m encoder/decoder (B16 x T64 frames of 64x64)
and of the default Catch model (B8 x T32 frames of 32x32, size1m widths).
Each variant runs in a fresh process (XLA flags are read at start-up); the
variants alternate over `--rounds`; medians.

Variants: `nhwc` (Keras's default layout, what the model runs), `nchw` (the
`channels_first` layout), `nhwc_bf16` (bf16 inputs with float32 accumulation,
`preferred_element_type`), `nhwc_matmul_grad` (the package's JAX CPU
convolution, `keras_dreamer.backend.jax_conv.conv2d_same`: XLA's forward pass and
input gradient, the kernel gradient as matrix products), and any of them with
`--xla-flags`.

    python benchmarks/conv_variants.py --variants nhwc nchw --rounds 2
    python benchmarks/conv_variants.py --variants nhwc nhwc_matmul_grad
    python benchmarks/conv_variants.py --variants nhwc --xla-flags=--xla_cpu_use_thunk_runtime=false
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402
from common import load_average  # noqa: E402
from common import run_worker  # noqa: E402

# (name, frames N, height = width, in channels, out channels)
SHAPES = {
    "size12m": [
        ("enc0 64x64 3->32", 1024, 64, 3, 32),
        ("enc1 32x32 32->48", 1024, 32, 32, 48),
        ("dec2 32x32 48->32", 1024, 32, 48, 32),
        ("decout 64x64 32->3", 1024, 64, 32, 3),
    ],
    "catch": [
        ("enc0 32x32 3->8", 256, 32, 3, 8),
        ("enc1 16x16 8->12", 256, 16, 8, 12),
        ("decout 32x32 8->3", 256, 32, 8, 3),
    ],
}

WORKER = r"""
import json, os, statistics, sys, time
import numpy as np
import jax
import jax.numpy as jnp

args = json.loads(sys.argv[1])
variant = args["variant"]
layout = ("NCHW", "OIHW", "NCHW") if variant.startswith("nchw") else ("NHWC", "HWIO", "NHWC")
dtype = jnp.bfloat16 if variant.endswith("bf16") else jnp.float32
rng = np.random.default_rng(0)
out = {}
for name, n, hw, cin, cout in args["shapes"]:
    if layout[0] == "NCHW":
        x = rng.standard_normal((n, cin, hw, hw), dtype=np.float32)
        w = rng.standard_normal((cout, cin, 5, 5), dtype=np.float32) * 0.1
    else:
        x = rng.standard_normal((n, hw, hw, cin), dtype=np.float32)
        w = rng.standard_normal((5, 5, cin, cout), dtype=np.float32) * 0.1
    x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)

    def conv(x, w):
        if variant == "nhwc_matmul_grad":
            sys.path.insert(0, os.environ["KD_ROOT"])
            from keras_dreamer.backend import jax_conv
            return jax_conv.conv2d_same(x, w)
        y = jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=layout,
            preferred_element_type=jnp.float32)
        return y

    cot = jnp.asarray(rng.standard_normal(conv(x, w).shape, dtype=np.float32))
    fwd = jax.jit(conv)
    bwd = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) * cot), argnums=(0, 1)))
    res = {}
    for key, fn in (("fwd", fwd), ("fwd_bwd", bwd)):
        jax.block_until_ready(fn(x, w))
        times = []
        for _ in range(args["reps"]):
            t = time.perf_counter()
            jax.block_until_ready(fn(x, w))
            times.append(time.perf_counter() - t)
        res[key] = statistics.median(times)
    flop = 2 * n * hw * hw * 25 * cin * cout
    res["gflops_fwd"] = flop / res["fwd"] / 1e9
    res["gflops_fwd_bwd"] = 3 * flop / res["fwd_bwd"] / 1e9
    out[name] = res
print("RESULT " + json.dumps({**args, "results": out, "load": os.getloadavg()[0]}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["nhwc", "nchw", "nhwc_bf16"])
    parser.add_argument("--configs", nargs="+", default=list(SHAPES))
    parser.add_argument("--xla-flags", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    shapes = [s for c in args.configs for s in SHAPES[c]]
    env = {"XLA_FLAGS": args.xla_flags} if args.xla_flags else None
    collected = {}
    for _ in range(args.rounds):
        for variant in args.variants:
            config = {
                "backend": "jax",
                "variant": variant,
                "shapes": shapes,
                "reps": args.reps,
                "xla_flags": args.xla_flags,
            }
            result = run_worker(WORKER, config, 1800, env=env)
            print(json.dumps(result), flush=True)
            if "results" not in result:
                continue
            for name, values in result["results"].items():
                slot = collected.setdefault((variant, name), {"fwd": [], "fwd_bwd": []})
                slot["fwd"].append(values["fwd"])
                slot["fwd_bwd"].append(values["fwd_bwd"])
    print()
    print(
        "| shape | variant | forward ms | forward + backward ms | vs nhwc (fwd+bwd) |"
    )
    print("|---|---|---|---|---|")
    for name, *_ in shapes:
        base = collected.get(("nhwc", name))
        for variant in args.variants:
            slot = collected.get((variant, name))
            if not slot:
                continue
            fwd = statistics.median(slot["fwd"])
            both = statistics.median(slot["fwd_bwd"])
            ratio = f"{statistics.median(base['fwd_bwd']) / both:.2f}x" if base else ""
            print(
                f"| {name} | {variant} | {1000 * fwd:.1f} | {1000 * both:.1f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
