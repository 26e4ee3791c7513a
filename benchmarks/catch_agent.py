"""The agent on the embedded Catch: score against wall time and env steps.

Builds what `keras-dreamer train` builds from `gin_configs/default.gin`
(Catch at 32x32 with a 10-cell ball, the size1m agent with three CNN stages,
LaProp at 1e-3 with 100 warm-up steps, `actent` 1e-2, B x T batches at the
given train ratio) and trains it for a fixed wall time, logging every
finished training episode as a JSON line: wall seconds since the start
(compile included), env steps, updates, score and length. Prints when the
mean of the last 10 episodes first reaches +10.

    KERAS_BACKEND=tensorflow python benchmarks/catch_agent.py --minutes 12 --out tf.jsonl
    python benchmarks/catch_agent.py --plot tf.jsonl jax.jsonl --png curve.png

The curve of a `keras-dreamer train` run itself comes from its logdir's
TensorBoard events (`episode/score`, `episode/count`, `env/steps`, with
their wall times), written as the same JSON lines:

    python benchmarks/catch_agent.py --logdir runs/catch --out tf.jsonl

There the mean of the last 10 episodes is rebuilt from each log window's
mean score and episode count, and the seconds count from the TensorBoard
writer's creation (about 5 s after the command starts: Python and Keras
imports); add `--start EPOCH_SECONDS` to count from the command's start.
"""

import argparse
import json
import os
import sys
import time


def train(args):
    import keras
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_dreamer as kd
    from keras_dreamer.envs.catch import Catch

    finished = []

    class RecordedCatch(Catch):
        """Catch that notes (score, length) of every finished episode."""

        score = length = 0

        def reset(self, seed=None):
            self.score, self.length = 0.0, 1
            return super().reset(seed)

        def step(self, action):
            obs = super().step(action)
            self.score = 0.0 if obs["is_first"] else self.score + float(obs["reward"])
            self.length = 1 if obs["is_first"] else self.length + 1
            if obs["is_last"]:
                finished.append((self.score, self.length))
            return obs

    start = time.time()
    keras.utils.set_random_seed(args.seed)
    env = RecordedCatch(size=32, ball_size=10)
    agent = kd.Agent(
        env.obs_space,
        env.act_space,
        preset="size1m",
        mults=(2, 3, 4),
        actent=1e-2,
        seed=args.seed,
    )
    agent.compile(optimizer=kd.optimizers.LaProp(learning_rate=1e-3, warmup=100))
    data = kd.data.Collector(
        env,
        policy=agent.policy,
        batch_size=args.batch,
        batch_length=args.length,
        train_ratio=args.ratio,
        seed=args.seed,
    )
    out = open(args.out, "w")
    scores = []

    class Record(keras.callbacks.Callback):
        updates = 0

        def on_train_batch_end(self, batch, logs=None):
            Record.updates += 1
            if Record.updates % 10:
                return
            done, finished[:] = finished[:], []
            for score, length in done:
                scores.append(score)
                line = {
                    "seconds": round(time.time() - start, 1),
                    "env_steps": int(data.env_steps),
                    "updates": Record.updates,
                    "score": score,
                    "length": length,
                    "mean10": float(np.mean(scores[-10:])),
                }
                out.write(json.dumps(line) + "\n")
                out.flush()
                print(json.dumps(line), flush=True)
            if time.time() - start > 60 * args.minutes:
                self.model.stop_training = True

    agent.fit(data, steps_per_epoch=100, epochs=10_000, verbose=0, callbacks=[Record()])
    reached = next(
        (
            i
            for i, s in enumerate(scores)
            if i >= 9 and np.mean(scores[i - 9 : i + 1]) >= 10
        ),
        None,
    )
    if args.frames:
        save_episode_strip(agent, args.frames, args.seed)
    print(
        "backend",
        keras.backend.backend(),
        "updates",
        Record.updates,
        "reached +10 (mean of 10):",
        "never" if reached is None else reached,
    )


def save_episode_strip(agent, path, seed, frames=8, every=3, zoom=4):
    """Plays the trained agent (eval policy) on a fresh Catch and saves
    `frames` frames, `every` steps apart, side by side as a PNG."""
    import numpy as np
    from PIL import Image

    import keras_dreamer as kd

    env = kd.envs.make("default", size=32, ball_size=10, seed=seed + 1)
    policy = agent.make_policy("eval", seed=seed)
    obs, shown = env.reset(), []
    for step in range(frames * every):
        if step % every == 0:
            shown.append(obs["image"])
        batch = {"image": obs["image"][None], "is_first": np.array([obs["is_first"]])}
        obs = env.step(policy(batch)[0])
    gap = np.full((32, 2, 3), 255, np.uint8)
    strip = np.concatenate([x for frame in shown for x in (frame, gap)][:-1], 1)
    image = Image.fromarray(strip).resize(
        (strip.shape[1] * zoom, strip.shape[0] * zoom), Image.NEAREST
    )
    image.save(path)


def from_logdir(args):
    """Writes a `keras-dreamer train` logdir's score curve as JSON lines."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(args.logdir, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()

    def series(tag):
        if tag in tags.get("tensors", []):
            return {
                e.step: (e.wall_time, float(make_ndarray(e.tensor_proto)))
                for e in events.Tensors(tag)
            }
        return {e.step: (e.wall_time, e.value) for e in events.Scalars(tag)}

    start = args.start if args.start is not None else events.FirstEventTimestamp()
    score, count = series("episode/score"), series("episode/count")
    env_steps = series("env/steps")
    recent, reached = [], None
    with open(args.out, "w") as out:
        for step in sorted(score):
            wall, value = score[step]
            recent = (recent + [value] * int(round(count[step][1])))[-10:]
            line = {
                "seconds": round(wall - start, 1),
                "env_steps": int(env_steps[step][1]),
                "updates": step,
                "window_score": value,
                "episodes": int(round(count[step][1])),
                "mean10": float(np.mean(recent)),
            }
            out.write(json.dumps(line) + "\n")
            print(json.dumps(line))
            if reached is None and line["mean10"] >= 10:
                reached = line
    print("reached +10 (mean of 10):", "never" if reached is None else reached)


def plot(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for path in args.plot:
        lines = [json.loads(line) for line in open(path)]
        label = os.path.splitext(os.path.basename(path))[0]
        for ax, key, scale in ((axes[0], "seconds", 60.0), (axes[1], "env_steps", 1.0)):
            ax.plot(
                [x[key] / scale for x in lines],
                [x["mean10"] for x in lines],
                label=label,
            )
    axes[0].set_xlabel("wall time (minutes, compile included)")
    axes[1].set_xlabel("env steps")
    for ax in axes:
        ax.set_ylabel("mean score, last 10 episodes")
        ax.axhline(10, color="gray", lw=0.8, ls="--")
        ax.axhline(-1, color="gray", lw=0.8, ls=":")
        ax.legend()
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--ratio", type=float, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="catch_agent.jsonl")
    parser.add_argument("--frames", help="PNG of an eval episode after training")
    parser.add_argument("--plot", nargs="+", help="JSONL files to plot instead")
    parser.add_argument(
        "--logdir", help="a `keras-dreamer train` logdir to read instead"
    )
    parser.add_argument("--start", type=float, help="with --logdir: the run's start")
    parser.add_argument("--png", default="catch_agent.png")
    parser.add_argument("--title", default="kd.Agent on Catch (default.gin)")
    args = parser.parse_args()
    if args.plot:
        plot(args)
    elif args.logdir:
        from_logdir(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
