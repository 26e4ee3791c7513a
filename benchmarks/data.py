"""Data-side speed: env steps/s, replay sampling and collector batches/s.

Run from the repository root (no accelerator needed):

    KERAS_BACKEND=jax python benchmarks/data.py [--quick]

Prints a markdown table of medians over repeats. Env rates include the
protocol checks and the resets that fall inside the timed steps (random
actions). Sampling is at B=16, T=64 with 64x64x3 uint8 images.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

# Measure this checkout, not whichever keras_dreamer is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras_dreamer as kd  # noqa: E402


def median_rate(run, repeats):
    """Median of `count / seconds` over `repeats` calls of `run() -> count`."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def env_rate(env, steps, repeats):
    """Median env steps/s; also without resets, and the resets' seconds."""
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    actions = [env.act_space.encode(env.act_space.sample(rng)) for _ in range(steps)]
    rates, playing, resets = [], [], []
    for repeat in range(repeats + 1):  # the first is a warm-up
        total = in_resets = 0.0
        for action in actions:
            start = time.perf_counter()
            first = env.step(action)["is_first"]
            seconds = time.perf_counter() - start
            total += seconds
            if first and repeat:
                resets.append(seconds)
                in_resets += seconds
        if repeat:
            rates.append(steps / total)
            playing.append(steps / (total - in_resets))
    return statistics.median(rates), statistics.median(playing), resets


def filled_replay(steps):
    replay = kd.data.Replay(steps, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 64, 64, 3), dtype=np.uint8)
    actions = np.eye(18, dtype=np.float32)
    for t in range(steps):
        replay.add(
            {
                "image": images[t % 256],
                "action": actions[t % 18],
                "reward": np.float32(0),
                "is_first": t % 500 == 0,
                "is_last": t % 500 == 499,
                "is_terminal": False,
            }
        )
    return replay


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    repeats = 5
    rows = []

    def row(name, value, unit, note=""):
        rows.append(f"| {name} | {value:,.0f} | {unit} | {note} |")
        print(rows[-1], flush=True)

    print("| what | median | unit | note |\n|---|---|---|---|")
    for size in (64, 32):
        steps = int(20000 * scale)
        rate, _, _ = env_rate(kd.envs.make("default", size=size), steps, repeats)
        row(f"default env (Catch {size}x{size}x3)", rate, "steps/s", "one core")
    try:
        steps = int(1000 * scale)
        rate, playing, resets = env_rate(kd.envs.make("crafter"), steps, 3)
        reset = statistics.median(resets) if resets else float("nan")
        note = f"{len(resets)} resets of {reset:.2f} s; {playing:,.0f} steps/s between"
        row("Crafter 64x64x3", rate, "steps/s", note)
        pong = kd.envs.make("atari:Pong")
        rate, _, _ = env_rate(pong, int(2000 * scale), repeats)
        row(
            "Atari Pong 96x96x1, repeat 4, sticky",
            rate,
            "steps/s",
            f"{4 * rate:,.0f} frames/s",
        )
    except ModuleNotFoundError as err:
        print(f"skipping Crafter/Atari: {err}")

    replay = filled_replay(int(50000 * scale))
    rate = median_rate(
        lambda: [replay.sample(16, 64) for _ in range(50)] and 50, repeats
    )
    row(
        "Replay.sample(16, 64), 64x64x3",
        rate,
        "batches/s",
        f"{len(replay):,} steps held",
    )
    collector = kd.data.Collector(
        "default",
        replay=kd.data.Replay(100_000),
        batch_size=16,
        batch_length=64,
        seed=0,
    )
    collector[0]  # prefill
    rate = median_rate(lambda: [collector[i] for i in range(20)] and 20, repeats)
    row(
        "Collector batch (default env, train_ratio 32)",
        rate,
        "batches/s",
        "32 env steps + sample",
    )
    machine = platform.processor() or platform.machine()
    print(f"\n{machine}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
