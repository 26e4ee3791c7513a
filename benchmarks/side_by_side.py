"""Learning side by side with the reference DreamerV3, on tasks nobody here wrote.

Runs keras-dreamer (`keras-dreamer train`, this checkout) and the reference
(danijar/dreamerv3 at e3f0224, its own `dreamerv3/main.py` in its own Python
environment; this repository never imports it) with the same settings: model
size, batch, train ratio, learning rate, warm-up, replay context, envs and env
steps. Each run is a fresh process; `--parallel` runs that many at a time.
Then it plots the score against env steps (median of the seeds, with their
min-max band, per side) and prints a markdown table.

    # the reference's environment (once):
    python -m venv /tmp/refenv && /tmp/refenv/bin/pip install "jax==0.4.33" \\
        "jaxlib==0.4.33" "numpy<2" chex einops jaxtyping ninjax optax elements \\
        granular portal scope ruamel.yaml gymnasium dm_control
    # 3 seeds per side on CartPole, two runs at a time:
    python benchmarks/side_by_side.py run --task cartpole --seeds 0 1 2 \\
        --root runs/side_by_side --reference-src /tmp/dreamerv3 \\
        --reference-python /tmp/refenv/bin/python --parallel 2
    python benchmarks/side_by_side.py plot --task cartpole \\
        --root runs/side_by_side --out docs/images/side_by_side_cartpole.png
    # dm_control cartpole_swingup from state, at the budget in RESULTS.md:
    python benchmarks/side_by_side.py run --task cartpole_swingup --seeds 0 1 2 \\
        --env-steps 12000 --set train_ratio=128 --root runs/side_by_side \\
        --reference-src /tmp/dreamerv3 --reference-python /tmp/refenv/bin/python

Tasks: `cartpole` (Gymnasium CartPole-v1 from its 4-float state, Discrete(2);
solved at 475) and `cartpole_swingup` (dm_control from proprioception, the
reference's `dmc` env settings; its published `dmc_proprio` curve is drawn
for orientation when `plot` gets `--reference-src`). `--env-steps` and `--set KEY=VALUE` (a shared setting)
override a task's settings for both sides at once; `--dry-run` prints the
commands. Record results with the CPU model in benchmarks/RESULTS.md.
"""

import argparse
import concurrent.futures
import gzip
import json
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model  # noqa: E402
from common import wait_or_stop  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("ours", "reference")

# Settings both sides share (a task may override them). Env steps and update
# counts follow from them as in both implementations: updates = env steps x
# train_ratio / (batch_size x batch_length).
SETTINGS = {
    "size": "size1m",
    "batch_size": 16,
    "batch_length": 64,
    "train_ratio": 64,
    "learning_rate": 1e-4,
    "warmup": 100,
    "replay_context": 1,
    "envs": 1,
    "env_steps": 40_000,
}
TASKS = {
    "cartpole": {
        "ours_env": "gym:CartPole-v1",
        "ours_gin_file": "cartpole.gin",
        "reference_task": "gymnasium_CartPole-v1",
        "reference_configs": [],
        "settings": SETTINGS,
        "solved": 475.0,
        "published": None,
    },
    "cartpole_swingup": {
        "ours_env": "dmc:cartpole_swingup",
        "ours_gin_file": "dmc_proprio.gin",
        "ours_gin": ["make_env.image = False", "make_env.proprio = True"],
        "reference_task": "dmc_cartpole_swingup",
        "reference_configs": ["dmc_proprio"],
        "settings": SETTINGS,
        "solved": None,
        "published": ("dmc_proprio-dreamerv3.json.gz", "dmc_cartpole_swingup"),
    },
}

# The reference's env for a Gymnasium task (its own `from_gym` speaks the
# old `gym` API), and the entry point that registers it before `main`.
REFERENCE_RUNNER = r"""
import json, sys
args = json.loads(sys.argv[1])
sys.path.insert(0, args["src"])
import numpy as np
import elements, embodied, gymnasium
from dreamerv3 import main as reference_main


class GymnasiumState(embodied.Env):
    # A Gymnasium env with a flat Box observation ('vector') and a Discrete
    # action, in the embodied.Env protocol.

    def __init__(self, name, seed):
        self._env = gymnasium.make(name)
        self._seed = seed
        self._done = True

    @property
    def obs_space(self):
        space = self._env.observation_space
        return {
            "vector": elements.Space(np.float32, space.shape, space.low, space.high),
            "reward": elements.Space(np.float32),
            "is_first": elements.Space(bool),
            "is_last": elements.Space(bool),
            "is_terminal": elements.Space(bool),
        }

    @property
    def act_space(self):
        return {
            "action": elements.Space(np.int32, (), 0, self._env.action_space.n),
            "reset": elements.Space(bool),
        }

    def step(self, action):
        if action["reset"] or self._done:
            obs, _ = self._env.reset(seed=self._seed)
            self._seed = None
            self._done = False
            return self._obs(obs, 0.0, True, False, False)
        obs, reward, terminated, truncated, _ = self._env.step(int(action["action"]))
        self._done = terminated or truncated
        return self._obs(obs, reward, False, self._done, terminated)

    def _obs(self, obs, reward, first, last, terminal):
        return {
            "vector": np.asarray(obs, np.float32),
            "reward": np.float32(reward),
            "is_first": first,
            "is_last": last,
            "is_terminal": terminal,
        }

    def close(self):
        self._env.close()


make_env = reference_main.make_env


def make_gymnasium_env(config, index, **overrides):
    if not config.task.startswith("gymnasium_"):
        return make_env(config, index, **overrides)
    seed = (config.seed * 1000 + index) % (2**31)
    env = GymnasiumState(config.task.split("_", 1)[1], seed)
    return reference_main.wrap_env(env, config)


reference_main.make_env = make_gymnasium_env
reference_main.main(args["argv"])
"""


def settings(args):
    """The task's shared settings with `--set` and `--env-steps` applied."""
    values = dict(TASKS[args.task]["settings"])
    for key, value in args.set:
        if key not in values:
            raise SystemExit(
                f"--set {key}: unknown setting (expected one of {sorted(values)})"
            )
        values[key] = type(values[key])(float(value)) if key != "size" else value
    if args.env_steps:
        values["env_steps"] = args.env_steps
    return values


LOG_EVERY = 50  # updates per log line and per `fit` epoch on our side


def updates(values):
    """Updates for the env steps, rounded up to whole log windows."""
    count = values["env_steps"] * values["train_ratio"]
    count /= values["batch_size"] * values["batch_length"]
    return -(-int(count) // LOG_EVERY) * LOG_EVERY


def ours_command(task, values, seed, logdir):
    gin = [
        f"make_env.name = '{TASKS[task]['ours_env']}'",
        *TASKS[task].get("ours_gin", []),
        f"make_world_model.preset = '{values['size']}'",
        f"make_optimizer.learning_rate = {values['learning_rate']}",
        f"make_optimizer.warmup = {values['warmup']}",
        f"train.seed = {seed}",
        f"train.steps = {updates(values)}",
        f"train.batch_size = {values['batch_size']}",
        f"train.batch_length = {values['batch_length']}",
        f"train.train_ratio = {values['train_ratio']}",
        f"train.replay_context = {values['replay_context']}",
        f"train.envs = {values['envs']}",
        f"train.log_every = {LOG_EVERY}",
        f"train.steps_per_epoch = {LOG_EVERY}",
        "train.report_every = 1000000",
        "train.save_every = 1000",
        "train.verbose = 'lines'",
    ]
    command = [sys.executable, "-m", "keras_dreamer.train", "--logdir", logdir]
    command += ["--gin_file", TASKS[task]["ours_gin_file"]]
    for binding in gin:
        command += ["--gin_param", binding]
    return command


def reference_command(task, values, seed, logdir, args):
    size = values["size"]
    argv = ["--configs", *TASKS[task]["reference_configs"], size]
    argv += ["--task", TASKS[task]["reference_task"], "--logdir", logdir]
    flags = {
        "seed": seed,
        "batch_size": values["batch_size"],
        "batch_length": values["batch_length"],
        "replay_context": values["replay_context"],
        "agent.opt.lr": values["learning_rate"],
        "agent.opt.warmup": values["warmup"],
        "run.train_ratio": values["train_ratio"],
        "run.steps": values["env_steps"],
        "run.envs": values["envs"],
        "run.eval_envs": 1,
        "run.log_every": 30,
        "run.report_every": 1e9,
        "run.save_every": 1e9,
        "run.debug": False,
        "jax.platform": "cpu",
        "jax.compute_dtype": "float32",
        "jax.prealloc": False,
        "jax.debug": False,
        "logger.outputs": "jsonl",
    }
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    payload = json.dumps({"src": args.reference_src, "argv": argv})
    return [args.reference_python, "-c", REFERENCE_RUNNER, payload]


def run_one(command, logdir, minutes, env):
    """Runs one side; stops it with SIGINT after `minutes`. Returns seconds."""
    os.makedirs(logdir, exist_ok=True)
    start = time.time()
    with open(os.path.join(logdir, "stdout.log"), "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        wait_or_stop(process, minutes * 60)
    seconds = time.time() - start
    with open(os.path.join(logdir, "run.json"), "w") as file:
        json.dump(
            {"command": command, "returncode": process.returncode, "seconds": seconds},
            file,
        )
    return process.returncode, seconds


def run(args):
    values = settings(args)
    jobs = []
    for seed in args.seeds:
        for side in args.sides:
            logdir = os.path.abspath(
                os.path.join(args.root, args.task, side, str(seed))
            )
            if side == "ours":
                command = ours_command(args.task, values, seed, logdir)
                env = {**os.environ, "PYTHONPATH": REPO}
            else:
                if not (args.reference_src and args.reference_python):
                    raise SystemExit(
                        "the reference side needs --reference-src and --reference-python"
                    )
                command = reference_command(args.task, values, seed, logdir, args)
                env = {**os.environ, "JAX_PLATFORMS": "cpu"}
                env.pop("PYTHONPATH", None)
            jobs.append((side, seed, logdir, command, env))
    print(f"{args.task}: {values} ({updates(values)} updates per run)")
    if args.dry_run:
        for side, seed, logdir, command, _ in jobs:
            shown = json.loads(command[-1])["argv"] if side == "reference" else command
            print(f"{side} seed {seed} -> {logdir}:", " ".join(map(str, shown)))
        return 0
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        futures = {
            pool.submit(run_one, command, logdir, args.minutes, env): (side, seed)
            for side, seed, logdir, command, env in jobs
        }
        for future in concurrent.futures.as_completed(futures):
            side, seed = futures[future]
            code, seconds = future.result()
            print(f"{side} seed {seed}: exit {code}, {seconds / 60:.1f} min")
    return 0


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def episodes(side, logdir):
    """(env steps, score) of each finished training episode of one run."""
    if side == "reference":
        return [
            (line["step"], line["episode/score"])
            for line in read_jsonl(os.path.join(logdir, "metrics.jsonl"))
            if "episode/score" in line
        ]
    env_steps = {
        line["step"]: line["env/steps"]
        for line in read_jsonl(os.path.join(logdir, "metrics.jsonl"))
        if "env/steps" in line
    }
    return [
        (env_steps[line["step"]], line["episode/score"])
        for line in read_jsonl(os.path.join(logdir, "scores.jsonl"))
        if "episode/score" in line and line["step"] in env_steps
    ]


def binned(points, edges):
    """Mean score per env-step bin (None where a bin has no episode)."""
    means = []
    for low, high in zip(edges[:-1], edges[1:]):
        scores = [score for step, score in points if low < step <= high]
        means.append(sum(scores) / len(scores) if scores else None)
    return means


def published(task, edges, reference_src):
    """The reference's published median curve up to the last edge, or None."""
    entry = TASKS[task]["published"]
    if not entry or not reference_src:
        return None
    path = os.path.join(reference_src, "scores", entry[0])
    if not os.path.exists(path):
        return None
    runs = [r for r in json.load(gzip.open(path)) if r["task"] == entry[1]]
    xs, ys = [], []
    for x in sorted({x for r in runs for x in r["xs"]}):
        if x > edges[-1]:
            break
        scores = [y for r in runs for rx, y in zip(r["xs"], r["ys"]) if rx == x]
        xs.append(x)
        ys.append(statistics.median(scores))
    return xs, ys


def plot(args):
    values = settings(args)
    edges = [values["env_steps"] * i / args.bins for i in range(args.bins + 1)]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    seeds, per_bin = {}, {}  # per side: its seeds, and each bin's seed scores
    for side in SIDES:
        folder = os.path.join(args.root, args.task, side)
        seeds[side] = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        curves = [
            binned(episodes(side, os.path.join(folder, seed)), edges)
            for seed in seeds[side]
        ]
        per_bin[side] = [
            [curve[i] for curve in curves if curve[i] is not None]
            for i in range(len(centers))
        ]
    rows = []
    for i, center in enumerate(centers):
        row = [f"{center:,.0f}"]
        for side in SIDES:
            scores = per_bin[side][i]
            if scores:
                row.append(
                    f"{statistics.median(scores):.0f} [{min(scores):.0f}, {max(scores):.0f}] (n={len(scores)})"
                )
            else:
                row.append("-")
        rows.append(row)
    print(f"CPU: {cpu_model()}")
    print(
        "| env steps | keras-dreamer median [min, max] | reference median [min, max] |"
    )
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 4))
        for side, color in zip(SIDES, ("tab:blue", "tab:orange")):
            filled = [(x, s) for x, s in zip(centers, per_bin[side]) if s]
            if not filled:
                continue
            xs = [x for x, _ in filled]
            label = "keras-dreamer" if side == "ours" else "reference DreamerV3"
            axis.plot(
                xs,
                [statistics.median(s) for _, s in filled],
                color=color,
                label=f"{label} (median of {len(seeds[side])})",
            )
            axis.fill_between(
                xs,
                [min(s) for _, s in filled],
                [max(s) for _, s in filled],
                color=color,
                alpha=0.2,
            )
        reference_curve = published(args.task, edges, args.reference_src)
        if reference_curve:
            axis.plot(
                *reference_curve,
                color="gray",
                linestyle="--",
                marker="o",
                label="reference, published (size1m, ratio 1024)",
            )
        if TASKS[args.task]["solved"]:
            axis.axhline(
                TASKS[args.task]["solved"], color="gray", linestyle=":", label="solved"
            )
        axis.set_xlabel("env steps")
        axis.set_ylabel("episode score")
        axis.set_title(
            f"{args.task}: {values['size']}, B{values['batch_size']}xT{values['batch_length']}, ratio {values['train_ratio']:g}"
        )
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(args.out, dpi=100)
        print(f"wrote {args.out}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "plot"):
        sub = commands.add_parser(name)
        sub.add_argument("--task", choices=sorted(TASKS), required=True)
        sub.add_argument("--root", default="runs/side_by_side")
        sub.add_argument("--env-steps", type=int, default=None)
        sub.add_argument("--reference-src", help="the reference's checkout")
        sub.add_argument(
            "--set",
            type=lambda s: s.split("=", 1),
            action="append",
            default=[],
            metavar="KEY=VALUE",
        )
    run_parser = commands.choices["run"]
    run_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run_parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    run_parser.add_argument("--reference-python")
    run_parser.add_argument("--parallel", type=int, default=1)
    run_parser.add_argument(
        "--minutes", type=float, default=90.0, help="wall-clock cap per run"
    )
    run_parser.add_argument("--dry-run", action="store_true")
    plot_parser = commands.choices["plot"]
    plot_parser.add_argument("--bins", type=int, default=10)
    plot_parser.add_argument("--out", help="PNG path for the plot")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else plot(args)


if __name__ == "__main__":
    raise SystemExit(main())
