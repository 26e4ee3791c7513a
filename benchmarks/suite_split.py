"""How much of the test suite's time is backend-independent, and what CI costs.

Reads the saved output of one run of the whole suite with
`--durations=0` (pytest's per-phase times: setup, call, teardown), asks
pytest which tests are marked `backend_independent` (`--collect-only`), and
sums each test's phases into the two groups. CI runs the whole suite on one
backend and only the model tests on the others, so with `legs` backends a
CI run costs about `1 + (legs - 1) * model_share` suites instead of `legs`.
Given the wall time of a CI run that ran the whole suite on `--ci-legs`
backends, it estimates the run before and after for three backends (the
time outside the tests, installs and the docs, counted as test time: an
upper bound for both).

    KERAS_BACKEND=jax nice -n 5 python -m pytest -n 2 --durations=0 > durations.txt
    python benchmarks/suite_split.py durations.txt --ci-seconds 1650 --ci-legs 2
"""

import argparse
import collections
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT  # noqa: E402
from common import cpu_model  # noqa: E402

# "12.34s call     tests/test_x.py::test_y[a-b]"
DURATION = re.compile(r"^(\d+(?:\.\d+)?)s (setup|call|teardown)\s+(\S.*)$")


def read_durations(path):
    """Seconds per test id (its phases summed) from `--durations=0` output."""
    seconds = collections.defaultdict(float)
    with open(path) as file:
        for line in file:
            match = DURATION.match(line.strip())
            if match:
                seconds[match.group(3)] += float(match.group(1))
    if not seconds:
        raise SystemExit(f"{path}: no '--durations=0' lines found")
    return seconds


def collected_ids(*args):
    """The ids of the tests pytest collects with `args` (e.g. a `-m`)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q"]
        + ["-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        check=True,
    )
    return {line for line in result.stdout.splitlines() if "::" in line}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("durations", help="saved output of pytest --durations=0")
    parser.add_argument("--ci-seconds", type=float, help="wall time of a CI run")
    parser.add_argument("--ci-legs", type=int, default=2, help="its backends")
    parser.add_argument("--legs", type=int, default=3, help="backends to estimate")
    args = parser.parse_args()

    seconds = read_durations(args.durations)
    marked = collected_ids("-m", "backend_independent")
    everything = collected_ids()
    groups = {"backend_independent": 0.0, "model": 0.0}
    for test, value in seconds.items():
        groups["backend_independent" if test in marked else "model"] += value
    # Tests collected now; pytest lists no time under 5 ms.
    counts = {"backend_independent": len(marked), "model": len(everything - marked)}
    total = sum(groups.values())
    print(f"CPU: {cpu_model()}; load average now: {os.getloadavg()}")
    print(f"{'group':<22}{'tests':>7}{'seconds':>10}{'share':>8}")
    for group, value in groups.items():
        print(f"{group:<22}{counts[group]:>7}{value:>10.0f}{value / total:>8.1%}")
    print(f"{'all':<22}{len(everything):>7}{total:>10.0f}")
    model_share = groups["model"] / total
    suites = 1 + (args.legs - 1) * model_share
    print(
        f"{args.legs} backends: {suites:.2f} suites of test time per CI run "
        f"instead of {args.legs} ({suites / args.legs:.0%})"
    )
    if args.ci_seconds:
        per_leg = args.ci_seconds / args.ci_legs
        print(
            f"CI estimate from {args.ci_seconds:.0f} s for {args.ci_legs} full "
            f"legs ({per_leg:.0f} s a leg, installs and docs included): "
            f"{args.legs} full legs {args.legs * per_leg:.0f} s, "
            f"split {suites * per_leg:.0f} s"
        )


if __name__ == "__main__":
    main()
