"""Replay context: replay bytes per step and the cost of an update, with vs without.

    PYTHONPATH=. KERAS_BACKEND=jax python3 benchmarks/replay_context.py [--updates N]

Bytes per step are exact (`kd.data.memory.step_bytes`, checked against what
a replay allocates). With `--updates N`, one process trains the default
Catch agent (default.gin's model and batch) on a context dataset and on a
plain one, alternating single-step `fit` calls (after a warm-up that
compiles both), and prints the median seconds per update of each and their
ratio (`fit` of one step includes the write-back callback and, on JAX, the
state sync it reads).
"""

import argparse
import statistics
import time

import numpy as np

import keras_dreamer as kd
from keras_dreamer.data import context
from keras_dreamer.data import memory
from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete

# (name, obs space, actions, RSSM deter, stoch, classes)
SHAPES = (
    ("default Catch (32x32x3, size1m)", {"image": Box((32, 32, 3), 0, 255, "uint8")}, 3,
     512, 32, 4),
    ("size1m-like, 64x64x3, 18 actions", {"image": Box((64, 64, 3), 0, 255, "uint8")},
     18, 512, 32, 4),
    ("size12m, 64x64x3, 18 actions", {"image": Box((64, 64, 3), 0, 255, "uint8")}, 18,
     2048, 32, 16),
)  # fmt: skip


def bytes_table():
    rows = []
    for name, obs, actions, deter, stoch, classes in SHAPES:
        spec = context.latent_spec(deter, stoch, classes)
        plain = memory.step_bytes(obs, Discrete(actions))
        with_context = memory.step_bytes(obs, Discrete(actions), spec)
        replay = kd.data.Replay(16, chunk_size=16, latents=spec)
        replay.add(
            {
                "image": np.zeros(obs["image"].shape, np.uint8),
                "action": np.zeros(actions, np.float32),
                "reward": 0.0,
                "is_first": True,
                "is_last": False,
                "is_terminal": False,
            }
        )
        assert replay.stats()["replay/bytes"] == 16 * with_context
        rows.append((name, plain, with_context, with_context / plain))
    return rows


def update_times(updates):
    env = kd.envs.make("default", size=32, ball_size=10)
    agent = kd.Agent(
        env.obs_space, env.act_space, preset="size1m", mults=(2, 3, 4), seed=0
    )
    agent.compile()
    datasets = {}
    for name, ctx in (("context", 1), ("plain", 0)):
        replay = kd.data.Replay(
            20000, seed=0, latents=context.model_latent_spec(agent) if ctx else None
        )
        datasets[name] = kd.data.Collector(
            env
            if name == "context"
            else kd.envs.make("default", size=32, ball_size=10),
            replay=replay,
            policy=agent.make_policy("train", seed=0),
            batch_size=8,
            batch_length=32,
            train_ratio=32,
            seed=0,
            replay_context=ctx,
        )
    times = {name: [] for name in datasets}
    for i in range(updates + 2):
        for name, data in datasets.items():
            start = time.perf_counter()
            agent.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
            if i >= 2:  # the first two compile
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=0)
    args = parser.parse_args()
    print("| shapes | bytes/step plain | with context | ratio |")
    print("|---|---|---|---|")
    for name, plain, ctx, ratio in bytes_table():
        print(f"| {name} | {plain:,} | {ctx:,} | {ratio:.2f}x |")
    if args.updates:
        times = update_times(args.updates)
        print(
            f"median s/update over {args.updates}: context {times['context']:.3f}, "
            f"plain {times['plain']:.3f}, ratio {times['context'] / times['plain']:.2f}"
        )


if __name__ == "__main__":
    main()
