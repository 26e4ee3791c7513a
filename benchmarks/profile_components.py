"""Where a world-model update spends its time: per component, per backend.

Each component of the update is compiled on its own (jitted on JAX, a
`tf.function` on TensorFlow, as `fit` runs them on a CPU) and timed forward
only and forward + backward, on the inputs it sees in a real update (computed
once by a forward pass of the model):

* `encoder`: the CNN over all B * T frames (uint8 in; weight gradients only);
* `rssm_scan`: `RSSM.observe`, the posterior scan over T steps (gradients of
  the weights and the tokens);
* `prior`: the prior logits of all B * T states (outside the scan);
* `decoder`: the image decoder from `(deter, stoch)` over all frames;
* `heads`: reward and continue heads;
* `losses`: the loss terms from the model's outputs (gradients of the
  outputs);
* `optimizer`: one LaProp step (clipping, moments, update) on gradients
  shaped like the weights;
* `update`: the whole `fit` step, for comparison with the sum.

Backward passes reduce the component's output with a fixed random cotangent,
so their cost is that of the real gradients. Each backend runs in a fresh
process; medians of the timed calls after a compiling one. On JAX the FLOPs of
each component's forward + backward are counted from its program (see
`flops.py`) and shared with the TensorFlow rows.

    python benchmarks/profile_components.py                 # both configs
    python benchmarks/profile_components.py --configs catch --backends jax
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402
from common import load_average  # noqa: E402
from common import run_worker  # noqa: E402
from flops import gflops_line  # noqa: E402

CONFIGS = {
    # default.gin's world model: Catch at 32x32, size1m, three CNN stages,
    # 8 x 32 batches, 3 actions.
    "catch": {
        "preset": "size1m",
        "overrides": {"mults": [2, 3, 4]},
        "size": 32,
        "actions": 3,
        "batch": 8,
        "length": 32,
    },
    # The reference's timing setting at size12m: 16 x 64 batches of 64x64.
    "size12m": {
        "preset": "size12m",
        "overrides": {},
        "size": 64,
        "actions": 18,
        "batch": 16,
        "length": 64,
    },
}

WORKER = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["KD_ROOT"])
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import numpy as np
import keras
from keras import ops
import keras_dreamer as kd
from flops import matmul_ceiling
from worker_utils import BatchEndTimes, Repeat, synthetic_batch, timed

args = json.loads(sys.argv[1])
backend = keras.backend.backend()
B, T, size = args["batch"], args["length"], args["size"]
batch = synthetic_batch(B, T, size=size, actions=args["actions"])
load_start = os.getloadavg()[0]
ceiling = matmul_ceiling()["gflops"]
wm = kd.WorldModel({"image": (size, size, 3)}, kd.Discrete(args["actions"]),
                   preset=args["preset"], seed=0, **args["overrides"])
wm.compile()
wm.optimizer.build(wm.trainable_variables)
rng = np.random.default_rng(1)

# The inputs each component sees, from one forward pass.
images = {"image": batch["image"]}
noise = rng.uniform(size=(B, T, wm.rssm.stoch, wm.rssm.classes)).astype("float32")
tokens = wm.encoder(images)
carry = wm.initial_carry(B)
_, feat = wm.observe(carry, batch, noise=noise)
outputs = wm._predict(feat)
prev_action = wm.previous_actions(batch)
to_np = lambda x: np.asarray(ops.convert_to_numpy(x))
tokens, deter, stoch = to_np(tokens), to_np(feat["deter"]), to_np(feat["stoch"])
vector = to_np(wm.feat_vector(feat))
prev_action = to_np(prev_action)
loss_inputs = {
    "recon": {"image": to_np(outputs["recon"]["image"])},
    "reward": to_np(outputs["reward"]), "cont": to_np(outputs["cont"]),
    "post": to_np(outputs["post"]), "prior": to_np(outputs["prior"]),
}

def cot(x):
    return rng.standard_normal(np.shape(x)).astype("float32")

def dot(x, c):
    return ops.sum(ops.cast(x, "float32") * c)

def observe(tokens):
    state = {"deter": carry["deter"], "stoch": carry["stoch"]}
    _, f = wm.rssm.observe(state, tokens, prev_action, batch["is_first"], noise=noise)
    return f

c_enc = cot(tokens)
f0 = observe(tokens)
c_obs = {k: cot(to_np(v)) for k, v in f0.items()}
c_prior = cot(loss_inputs["prior"])
c_dec = cot(loss_inputs["recon"]["image"])
c_rew, c_con = cot(loss_inputs["reward"]), cot(loss_inputs["cont"])

# name: (variables, fn(*inputs) -> scalar, inputs, how many leading inputs get gradients)
components = {
    "encoder": (wm.encoder.trainable_variables,
                lambda img: dot(wm.encoder({"image": img}), c_enc), [batch["image"]], 0),
    "rssm_scan": (wm.rssm.trainable_variables,
                  lambda tok: sum(dot(v, c_obs[k]) for k, v in observe(tok).items()),
                  [tokens], 1),
    "prior": (wm.rssm.trainable_variables,
              lambda d: dot(wm.rssm.prior_logits(d), c_prior), [deter], 1),
    "decoder": (wm.decoder.trainable_variables,
                lambda d, s: dot(wm.decoder(d, s)["image"], c_dec), [deter, stoch], 2),
    "heads": ([*wm.reward_head.trainable_variables, *wm.cont_head.trainable_variables],
              lambda v: dot(wm.reward_head(v), c_rew) + dot(wm.cont_head(v), c_con),
              [vector], 1),
    "losses": ([], lambda o: wm.loss_metrics(batch, o)["loss"], [loss_inputs], 1),
}
only = args.get("components")
if only:
    components = {k: v for k, v in components.items() if k in only}

results = {}
if backend == "jax":
    import jax
    from flops import jaxpr_flops

    def build(variables, fn, inputs, n_grad):
        def pure(values, *inputs):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*inputs)
        argnums = (0, *range(1, 1 + n_grad))
        fwd = jax.jit(pure)
        grad = jax.jit(jax.value_and_grad(pure, argnums=argnums))
        values = [v.value for v in variables]
        flop = jaxpr_flops(jax.make_jaxpr(jax.value_and_grad(pure, argnums=argnums))(
            values, *inputs))["flops"]
        fwd_flop = jaxpr_flops(jax.make_jaxpr(pure)(values, *inputs))["flops"]
        return (lambda: jax.block_until_ready(fwd(values, *inputs)),
                lambda: jax.block_until_ready(grad(values, *inputs)), flop, fwd_flop)

    def build_optimizer():
        opt = wm.optimizer
        values = [v.value for v in wm.trainable_variables]
        grads = [jax.numpy.asarray(cot(v)) * 1e-3 for v in values]
        opt_values = [v.value for v in opt.variables]
        step = jax.jit(lambda o, g, t: opt.stateless_apply(o, g, t))
        return lambda: jax.block_until_ready(step(opt_values, grads, values))
else:
    import tensorflow as tf

    def build(variables, fn, inputs, n_grad):
        inputs = [tf.nest.map_structure(tf.constant, x) for x in inputs]
        fwd = tf.function(lambda *xs: fn(*xs), jit_compile=args["tf_jit"])

        @tf.function(jit_compile=args["tf_jit"])
        def grad(*xs):
            with tf.GradientTape() as tape:
                watched = tf.nest.flatten(xs[:n_grad])
                tape.watch(watched)
                loss = fn(*xs)
            grads = tape.gradient(loss, [*variables, *watched])
            return loss, [g for g in grads if g is not None]

        return (lambda: fwd(*inputs).numpy(), lambda: grad(*inputs)[0].numpy(), None, None)

    def build_optimizer():
        opt = wm.optimizer
        variables = wm.trainable_variables
        grads = [tf.constant(cot(v) * 1e-3) for v in variables]
        step = tf.function(lambda: opt.apply(grads, variables), jit_compile=args["tf_jit"])
        return lambda: step()

reps = args["reps"]
for name, (variables, fn, inputs, n_grad) in components.items():
    fwd, grad, flop, fwd_flop = build(variables, fn, inputs, n_grad)
    compile_fwd, t_fwd = timed(fwd, reps)
    compile_grad, t_grad = timed(grad, reps)
    results[name] = {"forward_s": round(t_fwd, 4), "fwd_bwd_s": round(t_grad, 4),
                     "first_call_s": round(compile_grad, 2), "flop": flop,
                     "forward_flop": fwd_flop}
if not only or "optimizer" in only:
    first, t_opt = timed(build_optimizer(), reps)
    results["optimizer"] = {"forward_s": None, "fwd_bwd_s": round(t_opt, 4),
                            "first_call_s": round(first, 2), "flop": 0}
if not only or "update" in only:
    kwargs = {"jit_compile": args["tf_jit"]} if backend == "tensorflow" else {}
    model = kd.WorldModel({"image": (size, size, 3)}, kd.Discrete(args["actions"]),
                          preset=args["preset"], seed=0, **args["overrides"])
    model.compile(**kwargs)
    times = BatchEndTimes()
    start = time.perf_counter()
    model.fit(Repeat(batch, reps + 1), epochs=1, verbose=0, callbacks=[times],
              shuffle=False)
    steps = np.diff(times.ends)
    results["update"] = {"forward_s": None, "fwd_bwd_s": round(float(np.median(steps)), 4),
                         "first_call_s": round(times.ends[0] - start, 2), "flop": None}
ceiling = max(ceiling, matmul_ceiling()["gflops"])
print("RESULT " + json.dumps({**args, "backend": backend, "components": results,
                              "ceiling_gflops": ceiling,
                              "load": [round(load_start, 2), round(os.getloadavg()[0], 2)]}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"])
    parser.add_argument("--reps", type=int, default=None, help="timed calls")
    parser.add_argument("--components", nargs="+", default=None)
    parser.add_argument(
        "--overrides", default="{}", help="JSON world-model overrides, e.g. unroll"
    )
    parser.add_argument("--tf-jit", action="store_true", help="XLA on TensorFlow")
    parser.add_argument("--xla-flags", default=None)
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    env = {"XLA_FLAGS": args.xla_flags} if args.xla_flags else None
    rows = []
    for name in args.configs:
        config = dict(CONFIGS[name])
        config["overrides"] = {**config["overrides"], **json.loads(args.overrides)}
        reps = args.reps or (5 if name == "catch" else 3)
        flops = {}
        # JAX first: its FLOP counts label the TensorFlow rows too.
        for backend in sorted(args.backends, key=lambda b: b != "jax"):
            result = run_worker(
                WORKER,
                {
                    **config,
                    "config": name,
                    "backend": backend,
                    "reps": reps,
                    "components": args.components,
                    "tf_jit": bool(args.tf_jit),
                },
                args.timeout,
                env=env,
            )
            print(json.dumps(result), flush=True)
            if "components" not in result:
                continue
            for comp, values in result["components"].items():
                if values.get("flop") is not None:
                    flops[comp] = values["flop"]
            rows.append(result)
        for result in rows:
            if result["config"] == name:
                for comp, values in result["components"].items():
                    values["flop"] = flops.get(comp, values.get("flop"))
    print()
    print(
        "| config | backend | component | forward ms | forward + backward ms "
        "| share of the update | GFLOP (fwd+bwd) | GFLOP/s | % of ceiling | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in rows:
        comps = result["components"]
        update = comps.get("update", {}).get("fwd_bwd_s")
        parts = [v["fwd_bwd_s"] for k, v in comps.items() if k != "update"]
        for comp, values in comps.items():
            seconds = values["fwd_bwd_s"]
            flop = values.get("flop")
            rate, pct = gflops_line(flop, seconds, result["ceiling_gflops"])
            forward = values.get("forward_s")
            share = f"{100 * seconds / update:.0f}%" if update else ""
            print(
                f"| {result['config']} | {result['backend']} | {comp} "
                f"| {'' if forward is None else round(1000 * forward, 1)} "
                f"| {round(1000 * seconds, 1)} | {share} "
                f"| {'' if not flop else round(flop / 1e9, 2)} "
                f"| {'' if rate is None else rate} | {'' if pct is None else pct} "
                f"| {result['load'][0]}-{result['load'][1]} |"
            )
        if update:
            print(
                f"| {result['config']} | {result['backend']} | sum of the parts | "
                f"| {round(1000 * sum(parts), 1)} | {100 * sum(parts) / update:.0f}% "
                f"| | | | |"
            )
        print(f"(ceiling {result['ceiling_gflops']} GFLOP/s)")


if __name__ == "__main__":
    main()
