"""Side by side with the reference DreamerV3: the agent's update on this machine.

Times one train step of the reference agent (world model and actor-critic,
`dreamerv3.agent.Agent.train`) and of `kd.Agent` (`fit` step) on the same
batch shape (B x T 64x64x3 uint8 images, 18 discrete actions, float32),
each configuration in a fresh process, alternating over `--rounds`. The
reference needs its own checkout and Python environment (it pins jax 0.4.33
and numpy < 2), given with `--reference-src` and `--reference-python`; this
repository never imports it. For example:

    git clone https://github.com/danijar/dreamerv3 /tmp/dreamerv3
    python -m venv /tmp/refenv && /tmp/refenv/bin/pip install "jax==0.4.33" \\
        "numpy<2" chex einops jaxtyping ninjax optax elements granular portal \\
        scope ruamel.yaml
    python benchmarks/vs_reference.py --reference-src /tmp/dreamerv3 \\
        --reference-python /tmp/refenv/bin/python --presets size1m size12m

Prints one JSON line per process and a markdown table of medians.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent_step import WORKER as OURS  # noqa: E402
from common import cpu_model  # noqa: E402
from common import load_average  # noqa: E402
from common import run_code  # noqa: E402
from common import run_worker  # noqa: E402

REFERENCE = r"""
import json, os, pathlib, sys, tempfile, time
args = json.loads(sys.argv[1])
sys.path.insert(0, args["src"])
import numpy as np
import elements, jax, ruamel.yaml as yaml
from dreamerv3.agent import Agent
from embodied.jax import internal

configs = yaml.YAML(typ="safe").load(
    pathlib.Path(args["src"], "dreamerv3", "configs.yaml").read_text())
full = elements.Config(configs["defaults"]).update(configs[args["preset"]])
full = full.update({
    "jax.platform": "cpu", "jax.compute_dtype": "float32", "jax.prealloc": False,
})
# As the reference's own `make_agent` assembles it.
config = elements.Config(
    **full.agent, logdir=tempfile.mkdtemp(), seed=0, jax=full.jax,
    batch_size=args["batch"], batch_length=args["length"],
    replay_context=full.replay_context, report_length=full.report_length,
    replica=0, replicas=1)
B, T = args["batch"], args["length"] + full.replay_context
obs_space = {"image": elements.Space(np.uint8, (64, 64, 3)),
             "reward": elements.Space(np.float32), "is_first": elements.Space(bool),
             "is_last": elements.Space(bool), "is_terminal": elements.Space(bool)}
built = time.perf_counter()
# The reference compiles its train step while it builds (`precompile`).
agent = Agent(obs_space, {"action": elements.Space(np.int32, (), 0, 18)}, config)
built = time.perf_counter() - built
rng = np.random.default_rng(0)
batch = {
    "image": rng.integers(0, 256, (B, T, 64, 64, 3), dtype=np.uint8),
    "reward": rng.normal(size=(B, T)).astype(np.float32),
    "is_first": np.zeros((B, T), bool), "is_last": np.zeros((B, T), bool),
    "is_terminal": np.zeros((B, T), bool),
    "action": rng.integers(0, 18, (B, T)).astype(np.int32),
    "consec": np.zeros((B, T), np.int32),
    "stepid": rng.integers(0, 255, (B, T, 20)).astype(np.uint8),
}
batch["is_first"][:, 0] = True
for key, space in agent.spaces.items():  # replayed latents ("dyn/deter", ...)
    if key not in batch:
        batch[key] = np.zeros((B, T, *space.shape), space.dtype)
load_start = os.getloadavg()[0]
carry = agent.init_train(B)
times = []
for step in range(args["steps"] + 1):
    data = {**internal.device_put(batch, agent.train_sharded),
            "seed": agent._seeds(step, agent.train_mirrored)}
    start = time.perf_counter()
    carry, _, _ = agent.train(carry, data)
    jax.block_until_ready(agent.params)
    times.append(time.perf_counter() - start)
print("RESULT " + json.dumps({
    **args, "jax": jax.__version__, "first_step_s": round(built + times[0], 2),
    "median_s": round(float(np.median(times[1:])), 3),
    "all_s": [round(t, 3) for t in times[1:]],
    "load": [round(load_start, 2), round(os.getloadavg()[0], 2)],
}))
"""


def run_reference(config, python, timeout):
    """The reference worker in its own Python; its RESULT dict or an error."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("PYTHONPATH", None)
    return run_code(python, REFERENCE, config, env, timeout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-src", required=True)
    parser.add_argument("--reference-python", required=True)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--presets", nargs="+", default=["size1m", "size12m"])
    parser.add_argument("--steps", type=int, default=3, help="timed updates")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=3600)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average at start {load_average()}", flush=True)
    shape = {"batch": args.batch, "length": args.length, "steps": args.steps}
    runs = {}
    for _ in range(args.rounds):
        for preset in args.presets:
            config = {"impl": "reference", "preset": preset, **shape}
            result = run_reference(
                {**config, "src": args.reference_src},
                args.reference_python,
                args.timeout,
            )
            print(json.dumps(result), flush=True)
            runs.setdefault(("reference", preset), []).append(result)
            for backend in args.backends:
                config = {"backend": backend, "preset": preset, "kind": "agent"}
                config.update(shape, policy_calls=1)
                result = run_worker(OURS, config, args.timeout)
                print(json.dumps(result), flush=True)
                runs.setdefault((f"keras-dreamer {backend}", preset), []).append(result)
    print()
    print(
        "| preset | implementation | s / update (median of rounds) | runs | vs reference | first step s |"
    )
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        reference = None
        for (impl, p), results in runs.items():
            if p != preset:
                continue
            good = [r for r in results if "median_s" in r]
            if not good:
                print(f"| {preset} | {impl} | error | | | |")
                continue
            median = statistics.median(r["median_s"] for r in good)
            reference = median if impl == "reference" else reference
            ratio = f"{reference / median:.2f}x" if reference else ""
            print(
                f"| {preset} | {impl} | {median:.2f} "
                f"| {', '.join(str(r['median_s']) for r in good)} | {ratio} "
                f"| {', '.join(str(r['first_step_s']) for r in good)} |"
            )


if __name__ == "__main__":
    main()
