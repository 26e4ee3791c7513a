"""The `keras-dreamer` command line.

    keras-dreamer train --logdir DIR [--gin_file F ...] [--gin_param B ...]
                        [--backend jax|tensorflow] [--devices N|all]
                        [--job_addresses HOST:PORT --num_processes N --process_id I]
                        [--verbose]
    keras-dreamer plot LOGDIR [LOGDIR ...] [--keys PATTERN ...] [--out FILE.png]
                       [--smooth N]
    keras-dreamer import-reference CKPT_DIR --out AGENT.keras
                       [--backend jax|tensorflow] [--dtype POLICY]
    keras-dreamer eval --logdir RUN [--episodes N] [--checkpoint STEP]
                       [--mode eval|train] [--video] [--backend jax|tensorflow]

Exit codes: 0 success, 1 training failure (the last checkpoint is kept),
2 bad usage or configuration (one line on stderr says what is wrong).

Nothing here imports Keras before `--backend` has set `KERAS_BACKEND`.
"""

import argparse
import os
import sys

from keras_dreamer.train import command
from keras_dreamer.train import quiet
from keras_dreamer.train.command import UsageError
from keras_dreamer.train.command import resolve_gin_file
from keras_dreamer.train.command import select_backend

__all__ = ["UsageError", "main", "resolve_gin_file", "select_backend"]


def main(argv=None):
    """Runs the command line with `argv` (default: `sys.argv[1:]`).

    Args:
        argv: the arguments after `keras-dreamer`, e.g.
            `["train", "--logdir", "runs/x"]`.

    Returns:
        The exit code: 0 success, 1 training failure, 2 bad usage or
        configuration.

    Examples:
        >>> import json, os, tempfile
        >>> run = tempfile.mkdtemp()
        >>> with open(os.path.join(run, "metrics.jsonl"), "w") as file:
        ...     _ = file.write(json.dumps({"step": 10, "train/loss": 1.5}) + "\\n")
        >>> out = os.path.join(run, "loss.png")
        >>> main(["plot", run, "--keys", "loss", "--out", out])
        wrote .../loss.png
        0
    """
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "train":
            return command.run(args)
        if args.command == "import-reference":
            return _import_reference(args)
        if args.command == "eval":
            return _evaluate(args)
        return _plot(args)
    except UsageError as error:
        print(f"keras-dreamer {args.command}: error: {error}", file=sys.stderr)
        return 2


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-dreamer", description="DreamerV3 world models on Keras 3."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a world model (gin-configured; resumes an existing logdir)",
        description=command.DESCRIPTION,
    )
    command.add_arguments(train)
    plot = commands.add_parser("plot", help="plot metrics.jsonl curves of runs")
    plot.add_argument("logdirs", nargs="+", metavar="LOGDIR")
    plot.add_argument(
        "--keys",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="regexes of the metric keys to plot, one panel per key (default: "
        "the train losses and, once episodes have ended, episode/score)",
    )
    plot.add_argument("--out", default="plot.png", help="output PNG file")
    plot.add_argument("--smooth", type=int, default=1, help="moving-average window")
    imports = commands.add_parser(
        "import-reference",
        help="convert a checkpoint of the reference DreamerV3 into a .keras agent",
        description="Reads a run of danijar/dreamerv3 (its logdir, or one "
        "ckpt/<name> folder of it) and writes the matching kd.Agent with every "
        "parameter and the optimizer state as a .keras file.",
    )
    imports.add_argument("checkpoint", metavar="CKPT_DIR")
    imports.add_argument("--out", required=True, help="the .keras file to write")
    imports.add_argument(
        "--backend",
        choices=sorted(command.BACKEND_PACKAGES),
        help="Keras backend (default: the KERAS_BACKEND environment variable)",
    )
    imports.add_argument(
        "--dtype",
        default=None,
        help="dtype policy (default: the run's jax.compute_dtype, e.g. "
        "bfloat16 -> mixed_bfloat16)",
    )
    evaluate = commands.add_parser(
        "eval",
        help="play episodes with a trained run's policy and write their scores",
        description="Loads a run's checkpoint with its config.gin, plays "
        "episodes with its policy (in env processes when the run used them) and "
        "writes RUN/eval/<step>/episodes.jsonl (and GIFs with --video). Nothing "
        "else of the run is written.",
    )
    evaluate.add_argument("--logdir", required=True, help="the run directory")
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes to play")
    evaluate.add_argument(
        "--checkpoint",
        type=int,
        default=None,
        metavar="STEP",
        help="train step of the checkpoint (default: the latest)",
    )
    evaluate.add_argument(
        "--mode",
        choices=("eval", "train"),
        default="eval",
        help="the policy's mode (see kd.Agent.make_policy)",
    )
    evaluate.add_argument(
        "--video", action="store_true", help="write each episode as a GIF"
    )
    evaluate.add_argument(
        "--backend",
        choices=sorted(command.BACKEND_PACKAGES),
        help="Keras backend (default: the KERAS_BACKEND environment variable)",
    )
    return parser


def _evaluate(args):
    select_backend(args.backend)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet.filtered_stderr(True):
        from keras_dreamer.train import evaluation
        from keras_dreamer.train.errors import ConfigError

        try:
            result = evaluation.evaluate_run(
                args.logdir,
                episodes=args.episodes,
                step=args.checkpoint,
                mode=args.mode,
                video=args.video,
            )
        except ConfigError as error:
            raise UsageError(str(error)) from None
    for index, (score, length) in enumerate(zip(result["scores"], result["lengths"])):
        print(f"episode {index}: score {score:.4g}, length {length}")
    print(
        f"step {result['step']}: mean score {result['mean']:.4g} "
        f"+- {result['std']:.3g} over {len(result['scores'])} episodes; "
        f"wrote {result['directory']}"
    )
    return 0


def _import_reference(args):
    select_backend(args.backend)
    if not args.out.endswith(".keras"):
        raise UsageError(f"--out {args.out!r} must end in .keras.")
    from keras_dreamer import reference

    try:
        agent = reference.from_reference(args.checkpoint, dtype=args.dtype)
    except reference.ReferenceCheckpointError as error:
        raise UsageError(str(error)) from None
    agent.save(args.out)
    print(
        f"wrote {args.out}: {agent.world_model.obs_spaces} -> {agent.act_space}, "
        f"{agent.count_params():,} parameters"
    )
    return 0


def _plot(args):
    from keras_dreamer import plot

    try:
        path = plot.plot_runs(args.logdirs, args.keys, args.out, args.smooth)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
