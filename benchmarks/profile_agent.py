"""Where the agent update spends its time: per component, per backend.

The default Catch agent (`default.gin`: size1m, three CNN stages, 32x32x3
uint8 images, 3 actions, 8 x 32 batches, H = 15 imagined steps from all 256
posterior states) on one fixed batch. Each component runs as `fit` runs it on
that backend (jitted on JAX, a `tf.function` on TensorFlow, eagerly on
PyTorch), forward only and forward + backward, on the inputs it sees in a
real update (computed once by a forward pass):

* `world_model`: the world model's loss from the batch (encoder, posterior
  scan, decoder, heads, KL and prediction losses), gradients of its weights;
* `imagine`: the H-step imagination from all B * T states (forward only: no
  gradient flows through it);
* `actor_critic`: the policy, value and replay-value losses from the world
  model's outputs, imagination included, gradients of the actor's and
  critic's weights;
* `optimizer`: one LaProp step over all the agent's weights;
* `update`: the whole `Agent.fit` step, for comparison with the sum.

On PyTorch the update is also traced with `torch.profiler`: how many ATen
operator calls one update makes, how much of its wall time those operators
take themselves, and the costliest operators. What is left of the wall time
is Python: Keras's layers and ops and their dispatch. Each backend runs in a
fresh process; medians of the timed calls after a first one.

    python benchmarks/profile_agent.py                      # jax, torch
    python benchmarks/profile_agent.py --backends jax torch tensorflow --reps 7
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402
from common import load_average  # noqa: E402
from common import run_worker  # noqa: E402

WORKER = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["KD_ROOT"])
sys.path.insert(0, os.path.join(os.environ["KD_ROOT"], "benchmarks"))
import numpy as np
import keras
from keras import ops
import keras_dreamer as kd
from worker_utils import BatchEndTimes, Repeat, synthetic_batch, timed

args = json.loads(sys.argv[1])
backend = keras.backend.backend()
B, T, H = args["batch"], args["length"], 15
batch = synthetic_batch(B, T, size=32, actions=3)
load_start = os.getloadavg()[0]

def make_agent():
    agent = kd.Agent({"image": (32, 32, 3)}, kd.Discrete(3), preset="size1m",
                     mults=(2, 3, 4), actent=1e-2, imag_length=H, seed=0)
    agent.compile()
    return agent

agent = make_agent()
agent.optimizer.build(agent.trainable_variables)
wm, rssm = agent.world_model, agent.world_model.rssm
rng = np.random.default_rng(1)
to_np = lambda x: np.asarray(ops.convert_to_numpy(x))
uniform = lambda *shape: rng.uniform(size=shape).astype("float32")
post_noise = uniform(B, T, rssm.stoch, rssm.classes)
imag_noise = {"action": to_np(agent.actor.draw_noise((H, B * T), agent.noise_generator)),
              "latent": uniform(H, B * T, rssm.stoch, rssm.classes)}
outputs = keras.tree.map_structure(to_np, wm(batch, noise=post_noise))
start = {k: outputs[k].reshape(B * T, *outputs[k].shape[2:]) for k in ("deter", "stoch")}
# Backend tensors, as a train step sees them.
outputs, start, imag_noise = keras.tree.map_structure(
    ops.convert_to_tensor, (outputs, start, imag_noise))

def world_model_loss():
    return wm.loss_metrics(batch, wm(batch, training=True, noise=post_noise))["loss"]

def imagine():
    traj = agent.imagine(start, H, noise=imag_noise)
    return ops.sum(ops.cast(traj["deter"], "float32"))

def actor_critic_loss():
    values = agent._actor_critic(batch, outputs, False, imag_noise)
    return values["loss/policy"] + values["loss/value"] + values["loss/repval"]

heads = [*agent.actor.trainable_variables, *agent.critic.trainable_variables]
components = {  # name: (variables to differentiate, or None for forward only; fn)
    "world_model": (wm.trainable_variables, world_model_loss),
    "imagine": (None, imagine),
    "actor_critic": (heads, actor_critic_loss),
}

if backend == "jax":
    import jax

    def build(variables, fn):
        variables = variables or []
        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn()
        values = [v.value for v in variables]
        fwd = jax.jit(pure)
        grad = jax.jit(jax.value_and_grad(pure))
        return (lambda: jax.block_until_ready(fwd(values)),
                lambda: jax.block_until_ready(grad(values)))

    def build_optimizer():
        opt = agent.optimizer
        values = [v.value for v in agent.trainable_variables]
        grads = [jax.numpy.asarray(rng.standard_normal(v.shape).astype("float32") * 1e-3)
                 for v in values]
        opt_values = [v.value for v in opt.variables]
        step = jax.jit(lambda o, g, t: opt.stateless_apply(o, g, t))
        return lambda: jax.block_until_ready(step(opt_values, grads, values))
elif backend == "tensorflow":
    import tensorflow as tf

    def build(variables, fn):
        @tf.function
        def grad():
            with tf.GradientTape() as tape:
                loss = fn()
            return loss, tape.gradient(loss, variables)
        return (tf.function(fn), grad)

    def build_optimizer():
        variables = agent.trainable_variables
        grads = [tf.constant(rng.standard_normal(v.shape).astype("float32") * 1e-3)
                 for v in variables]
        return tf.function(lambda: agent.optimizer.apply(grads, variables))
else:
    import torch

    def build(variables, fn):
        def fwd():
            with torch.no_grad():
                return fn()
        def grad():
            loss = fn()
            return torch.autograd.grad(loss, [v.value for v in variables])
        return fwd, grad

    def build_optimizer():
        variables = agent.trainable_variables
        grads = [torch.from_numpy(rng.standard_normal(v.shape).astype("float32") * 1e-3)
                 for v in variables]
        def step():
            with torch.no_grad():
                agent.optimizer.apply(grads, variables)
        return step

reps = args["reps"]
results = {}
for name, (variables, fn) in components.items():
    fwd, grad = build(variables, fn)
    _, t_fwd = timed(fwd, reps)
    first, t_grad = (None, None) if variables is None else timed(grad, reps)
    results[name] = {"forward_s": round(t_fwd, 4),
                     "fwd_bwd_s": None if t_grad is None else round(t_grad, 4)}
_, t_opt = timed(build_optimizer(), reps)
results["optimizer"] = {"forward_s": None, "fwd_bwd_s": round(t_opt, 4)}

model = make_agent()
times = BatchEndTimes()
start_time = time.perf_counter()
model.fit(Repeat(batch, reps + 1), epochs=1, verbose=0, callbacks=[times], shuffle=False)
steps = np.diff(times.ends)
results["update"] = {"forward_s": None, "fwd_bwd_s": round(float(np.median(steps)), 4),
                     "first_s": round(times.ends[0] - start_time, 2)}

ops_profile = None
if backend == "torch":
    import torch
    from torch.profiler import ProfilerActivity, profile
    updates = 3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start_time = time.perf_counter()
        model.fit(Repeat(batch, updates), epochs=1, verbose=0, shuffle=False)
        wall = (time.perf_counter() - start_time) / updates
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    calls = sum(e.count for e in events)
    self_s = sum(e.self_cpu_time_total for e in events) / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    ops_profile = {
        "profiled_wall_s": round(wall, 4),
        "aten_calls": round(calls / updates),
        "aten_self_s": round(self_s / updates, 4),
        "top": [[e.key, round(e.self_cpu_time_total / 1e3 / updates, 1),
                 round(e.count / updates)] for e in top],
    }
print("RESULT " + json.dumps({**args, "backend": backend, "components": results,
                              "ops": ops_profile,
                              "load": [round(load_start, 2),
                                       round(os.getloadavg()[0], 2)]}))
"""


def table(results):
    """Markdown rows: each component's forward and forward + backward
    milliseconds and share of the update, per backend."""
    lines = [
        "| backend | component | forward ms | forward + backward ms "
        "| share of the update | load |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        comps = result["components"]
        update = comps["update"]["fwd_bwd_s"]
        for name, values in comps.items():
            seconds = values["fwd_bwd_s"]
            forward = values["forward_s"]
            shown = seconds if seconds is not None else forward
            lines.append(
                f"| {result['backend']} | {name} "
                f"| {'' if forward is None else round(1000 * forward, 1)} "
                f"| {'' if seconds is None else round(1000 * seconds, 1)} "
                f"| {100 * shown / update:.0f}% "
                f"| {result['load'][0]}-{result['load'][1]} |"
            )
    return "\n".join(lines)


def ops_lines(result):
    """What `torch.profiler` saw of one update, as text."""
    profile = result["ops"]
    wall = profile["profiled_wall_s"]
    lines = [
        f"torch.profiler, per update: {profile['aten_calls']} ATen operator calls; "
        f"the operators themselves {1000 * profile['aten_self_s']:.0f} ms of "
        f"{1000 * wall:.0f} ms wall ({100 * profile['aten_self_s'] / wall:.0f}%; "
        "the rest is Python, Keras and dispatch)",
        "| operator | self ms per update | calls per update |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {ms} | {count} |" for name, ms, count in profile["top"]]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"])
    parser.add_argument("--reps", type=int, default=5, help="timed calls")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    results = []
    for backend in args.backends:
        config = {"backend": backend, "reps": args.reps}
        config.update(batch=args.batch, length=args.length)
        result = run_worker(WORKER, config, args.timeout)
        print(json.dumps(result), flush=True)
        if "components" in result:
            results.append(result)
    print()
    print(table(results))
    for result in results:
        if result.get("ops"):
            print()
            print(ops_lines(result))


if __name__ == "__main__":
    main()
