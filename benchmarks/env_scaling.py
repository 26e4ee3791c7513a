"""Env steps/s with N env processes (`kd.envs.ProcessEnvs`), and the batched policy step.

For Catch and Crafter: env steps per second (summed over envs) of one env in
this process (the reference), and of N = 1, 2, 4 envs each in its own
process, stepped all at once with random actions (`ProcessEnvs.step`, which
includes the copy of the observations out of shared memory). With
`--pipe`, also the same with the observations pickled over the pipes instead
of shared memory. With `--standby K ...`, also with K standby processes
(`ProcessEnvs(standby=K)`: spare envs that reset ahead, so an episode's end
does not stall the lockstep step on a slow reset). Then the time of one batched `agent.policy` step for N
envs (a size1m agent on 64x64 Catch images), in a fresh process per backend.
Medians of `repeats` timed runs after a warm-up; resets that fall inside the
timed steps count (Crafter's world generation is most of its cost).

    python benchmarks/env_scaling.py                      # both envs, N = 1, 2, 4
    python benchmarks/env_scaling.py --envs catch --counts 1 2 --pipe
    python benchmarks/env_scaling.py --envs crafter --counts 1 2 --standby 0 1 2

Import `measure_env_scaling` to get the rows as dicts; run the script to get
them as JSON lines and a markdown table.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT  # noqa: E402
from common import run_worker  # noqa: E402

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import keras_dreamer.envs as kd_envs  # noqa: E402  (no Keras import)

ENV_KWARGS = {"catch": {"size": 64}, "crafter": {"size": 64}, "sleepy": {"size": 64}}
# Env steps per timed run, summed over envs.
STEPS = {"catch": 20_000, "crafter": 3_000, "sleepy": 1_000}


class SleepyCatch(kd_envs.Catch):
    """Catch whose step also waits 5 ms without using the CPU (env "sleepy").

    It shows whether envs in processes step at the same time, whatever the
    load of the machine: N of them give N times the steps/s only if they do.
    """

    def _step(self, action):
        time.sleep(0.005)
        return super()._step(action)


def _factory(name):
    """What `ProcessEnvs` and the in-process run build for an env name."""
    return SleepyCatch if name == "sleepy" else name


POLICY_WORKER = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["KD_ROOT"])
import numpy as np
import keras
import keras_dreamer as kd

args = json.loads(sys.argv[1])
agent = kd.Agent({"image": (64, 64, 3)}, kd.Discrete(3), preset=args["preset"])
rows = []
for count in args["counts"]:
    policy = agent.make_policy("train", seed=0)
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8),
           "reward": np.zeros(count, np.float32),
           "is_first": np.ones(count, bool),
           "is_last": np.zeros(count, bool),
           "is_terminal": np.zeros(count, bool)}
    policy(obs)  # compile
    obs["is_first"][:] = False
    times = []
    for _ in range(args["calls"]):
        start = time.perf_counter()
        policy(obs)
        times.append(time.perf_counter() - start)
    rows.append({"bench": "policy_step", "backend": keras.backend.backend(),
                 "preset": args["preset"], "envs": count,
                 "ms": round(1000 * float(np.median(times)), 2)})
print("RESULT " + json.dumps({"rows": rows}))
"""


def _random_actions(act_space, count, rounds, seed=0):
    rng = np.random.default_rng(seed)
    return np.eye(act_space.n, dtype=np.float32)[
        rng.integers(act_space.n, size=(rounds, count))
    ]


def _in_process_rate(name, kwargs, steps, repeats, warmup):
    factory = _factory(name)
    env = (
        factory(**kwargs, seed=0)
        if callable(factory)
        else kd_envs.make(name, **kwargs, seed=0)
    )
    actions = _random_actions(env.act_space, 1, steps + warmup)[:, 0]
    env.reset(seed=0)
    rates = _rates(env.step, actions, warmup, repeats, steps_per_action=1)
    env.close()
    return rates


def _process_rate(
    name, kwargs, count, steps, repeats, warmup, shared_memory, standby=0
):
    rounds = max(1, steps // count)
    with kd_envs.ProcessEnvs(
        _factory(name),
        count,
        env_kwargs=kwargs,
        seed=0,
        shared_memory=shared_memory,
        standby=standby,
    ) as envs:
        actions = _random_actions(envs.act_space, count, rounds + warmup)
        envs.reset(seeds=list(range(count)))
        return _rates(envs.step, actions, warmup, repeats, steps_per_action=count)


def _rates(step, actions, warmup, repeats, steps_per_action):
    """Env steps/s of `repeats` passes over `actions[warmup:]`, after a warm-up."""
    for action in actions[:warmup]:
        step(action)
    timed = actions[warmup:]
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for action in timed:
            step(action)
        rates.append(len(timed) * steps_per_action / (time.perf_counter() - start))
    return rates


def _row(name, kwargs, mode, count, transport, rates, standby=0):
    return {
        "bench": "env_steps",
        "env": name,
        "size": kwargs.get("size"),
        "mode": mode,
        "envs": count,
        "standby": standby,
        "processes": count + standby if mode == "processes" else 0,
        "transport": transport,
        "steps_per_s": round(float(np.median(rates)), 1),
        "all": [round(float(r), 1) for r in rates],
    }


def measure_env_scaling(
    envs=("catch", "crafter"),
    counts=(1, 2, 4),
    repeats=3,
    steps=None,
    pipe=False,
    policy_backends=("jax",),
    policy_counts=(1, 2, 4),
    policy_preset="size1m",
    policy_calls=50,
    env_kwargs=None,
    standbys=(0,),
):
    """Measures env steps/s for N env processes and the batched policy step.

    Args:
        envs: env names (`kd.envs.make`), or "sleepy" (`SleepyCatch`: a
            step that waits 5 ms, to check that the processes step at the
            same time); "crafter" gives a row with an `error` when the
            package is missing.
        counts: numbers of env processes N.
        repeats: timed runs per setting (the median is reported).
        steps: env steps per timed run, summed over envs (default: 20,000
            for Catch, 3,000 for Crafter).
        pipe: also measure the observations pickled over the pipes.
        policy_backends: backends for the policy step (each in a fresh
            process); empty to skip it.
        policy_counts: numbers of envs of the batched policy step.
        policy_preset: the agent's preset.
        policy_calls: timed policy calls per setting.
        env_kwargs: `{name: kwargs}` for `kd.envs.make`, replacing the
            default (`size=64`) of that env.
        standbys: standby process counts to measure each N with
            (`ProcessEnvs(standby=...)`).

    Returns:
        A list of dicts. Env rows: `bench="env_steps"`, `env`, `mode`
        ("in-process" or "processes"), `envs` (N), `transport`
        ("shared_memory", "pipe" or "none"), `standby`, `processes` (N +
        standby), `steps_per_s` (median, summed over envs), `all` (every
        run), `speedup` (over one env process, no standby, same transport). Policy rows: `bench="policy_step"`, `backend`,
        `preset`, `envs`, `ms` (median of `policy_calls`).

    Example:
        >>> rows = measure_env_scaling(envs=("catch",), counts=(1, 2),
        ...                            repeats=1, steps=200, policy_backends=())
        >>> sorted({(r["mode"], r["envs"]) for r in rows})
        [('in-process', 1), ('processes', 1), ('processes', 2)]
    """
    rows = []
    for name in envs:
        kwargs = {**ENV_KWARGS.get(name, {}), **(env_kwargs or {}).get(name, {})}
        total = steps or STEPS.get(name, 3000)
        warmup = max(10, total // 50)
        try:
            rates = _in_process_rate(name, kwargs, total, repeats, warmup)
        except ModuleNotFoundError as error:
            rows.append({"bench": "env_steps", "env": name, "error": str(error)})
            continue
        rows.append(_row(name, kwargs, "in-process", 1, "none", rates))
        for transport in ("shared_memory", "pipe") if pipe else ("shared_memory",):
            base = None
            for standby in standbys:
                for count in counts:
                    rates = _process_rate(
                        name,
                        kwargs,
                        count,
                        total,
                        repeats,
                        warmup,
                        transport == "shared_memory",
                        standby,
                    )
                    row = _row(
                        name, kwargs, "processes", count, transport, rates, standby
                    )
                    if count == 1 and standby == 0:
                        base = row["steps_per_s"]
                    if base:
                        row["speedup"] = round(row["steps_per_s"] / base, 2)
                    rows.append(row)
    for backend in policy_backends:
        config = {
            "backend": backend,
            "preset": policy_preset,
            "counts": list(policy_counts),
            "calls": policy_calls,
        }
        result = run_worker(POLICY_WORKER, config)
        rows.extend(result.get("rows", [{**config, "bench": "policy_step"}]))
    return rows


def markdown(rows):
    """The rows as markdown tables (env steps/s, then the policy step)."""
    lines = [
        "| env | image | mode | N | standby | processes | observations "
        "| env steps/s (median) | x one process | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["bench"] != "env_steps":
            continue
        if "error" in r:
            lines.append(f"| {r['env']} | | error: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['env']} | {r['size']}x{r['size']} | {r['mode']} | {r['envs']} "
            f"| {r['standby']} | {r['processes'] or ''} | {r['transport']} "
            f"| {r['steps_per_s']:,.0f} | {r.get('speedup', '')} "
            f"| {', '.join(f'{x:,.0f}' for x in r['all'])} |"
        )
    policy = [r for r in rows if r["bench"] == "policy_step"]
    if policy:
        lines += ["", "| backend | preset | N envs | `agent.policy` ms (median) |"]
        lines.append("|---|---|---|---|")
        for r in policy:
            lines.append(
                f"| {r['backend']} | {r['preset']} | {r['envs']} | {r.get('ms', 'error')} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=["catch", "crafter"])
    parser.add_argument("--counts", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--pipe", action="store_true")
    parser.add_argument("--policy-backends", nargs="*", default=["jax"])
    parser.add_argument("--policy-calls", type=int, default=50)
    parser.add_argument("--catch-size", type=int, default=64)
    parser.add_argument(
        "--standby", nargs="+", type=int, default=[0], help="standby processes"
    )
    args = parser.parse_args()
    rows = measure_env_scaling(
        envs=args.envs,
        counts=args.counts,
        repeats=args.repeats,
        steps=args.steps,
        pipe=args.pipe,
        policy_backends=args.policy_backends,
        policy_counts=args.counts,
        policy_calls=args.policy_calls,
        env_kwargs={"catch": {"size": args.catch_size}},
        standbys=args.standby,
    )
    for row in rows:
        print(json.dumps(row), flush=True)
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
