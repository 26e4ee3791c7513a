"""Parameter counts of every preset against DreamerV3's.

Builds each preset for a 64x64x3 image and 18 discrete actions and prints its
encoder, RSSM, decoder, reward-head and continue-head parameter counts next to
the reference implementation's (dreamerv3_semantics.md section 1.7), then the
agent's policy and value counts (trainable; the slow critic is a further
value-sized copy) next to the reference's (dreamerv3_agent.md section 1:
trunk F*U + 2U^2 + 6U, policy + U*n + n, value + 255U + 255). Building is
fastest on TensorFlow:

    KERAS_BACKEND=tensorflow python benchmarks/param_counts.py [--presets size1m ...]
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras_dreamer as kd  # noqa: E402

# enc, dyn (RSSM), dec, rew, con of the reference agent.
REFERENCE = {
    "size1m": (14_304, 377_472, 80_595, 57_663, 41_153),
    "size12m": (220_416, 5_982_720, 1_272_003, 721_407, 656_129),
    "size25m": (493_824, 13_446_912, 2_857_635, 1_573_503, 1_475_713),
    "size50m": (876_032, 23_892_992, 5_076_355, 2_753_279, 2_622_977),
    "size100m": (1_966_848, 53_730_816, 11_413_059, 6_095_871, 5_900_545),
    "size200m": (3_492_864, 95_496_192, 20_282_115, 10_749_183, 10_488_833),
    "size400m": (7_850_496, 214_809_600, 45_617_283, 23_987_967, 23_597_569),
}


def counts(preset):
    wm = kd.WorldModel({"image": (64, 64, 3)}, kd.Discrete(18), preset=preset)
    parts = (wm.encoder, wm.rssm, wm.decoder, wm.reward_head, wm.cont_head)
    return tuple(layer.count_params() for layer in parts)


def reference_actor_critic(preset, actions=18, bins=255):
    """Policy and value counts from the reference's layer shapes."""
    config = kd.presets.resolve(preset)
    feat = config["deter"] + config["stoch"] * config["classes"]
    units = config["units"]
    trunk = feat * units + 2 * units**2 + 6 * units
    return trunk + units * actions + actions, trunk + bins * units + bins


def actor_critic_counts(preset):
    agent = kd.Agent({"image": (64, 64, 3)}, kd.Discrete(18), preset=preset)

    def trainable(layer):
        return sum(int(math.prod(v.shape)) for v in layer.trainable_weights)

    return trainable(agent.actor), trainable(agent.critic)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(REFERENCE))
    args = parser.parse_args()
    print(
        "| preset | enc | dyn (RSSM) | dec | rew | con | world model | reference | diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        ours = counts(preset)
        total, reference = sum(ours), sum(REFERENCE[preset])
        diff = (total - reference) / reference
        cells = " | ".join(f"{c:,}" for c in ours)
        print(
            f"| {preset} | {cells} | {total:,} | {reference:,} | {diff:+.2%} |",
            flush=True,
        )
    print()
    print("| preset | policy | reference | value | reference |")
    print("|---|---|---|---|---|")
    for preset in args.presets:
        policy, value = actor_critic_counts(preset)
        ref_policy, ref_value = reference_actor_critic(preset)
        print(
            f"| {preset} | {policy:,} | {ref_policy:,} | {value:,} | {ref_value:,} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
