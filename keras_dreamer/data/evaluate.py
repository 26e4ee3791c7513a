"""Evaluation: whole episodes played with a policy, apart from training."""

import numpy as np

from keras_dreamer.data.driver import Driver


class Evaluator:
    """Plays whole episodes on its own env and returns their mean score.

    Calling it plays `episodes` episodes one after the other on `env` with
    `policy`, stepped by a `kd.data.Driver` (the policy is batched over one
    env: it gets obs `[1, ...]` and returns actions `[1, A]`, e.g.
    `agent.make_policy("eval")`), and returns
    `eval/episode/score` and `eval/episode/length`, the means over those
    episodes (a length counts the obs, the first included, as the
    collector's `episode/length`). An episode is cut after `max_steps` env
    steps, so an env that never ends cannot hang training; a cut episode
    counts with the score it reached, and `eval/episode/cut` gives the
    fraction of cut episodes. Every episode starts from a reset, so a
    stateful policy starts anew (`is_first`).

    Nothing here touches the training data: the env is separate and no step
    enters a replay. Pass it to `kd.DreamerReportCallback(evaluator=...,
    eval_every=...)` to evaluate on a schedule during `fit`.

    Args:
        env: an env or a `kd.envs.make` name (use another seed than the
            training envs).
        policy: callable from batched obs (obs keys, `reward`, `is_first`,
            `is_last`, `is_terminal`) to batched actions.
        episodes: episodes per call (>= 1).
        max_steps: the most env steps of one episode (>= 1).
        seed: int seed of the env's first reset, or None.

    Examples:
        >>> import keras_dreamer as kd
        >>> env = kd.envs.make("default", size=16, max_steps=20)
        >>> evaluate = kd.data.Evaluator(env, kd.data.RandomPolicy(env.act_space, 0),
        ...                              episodes=2, seed=0)
        >>> metrics = evaluate()
        >>> sorted(metrics)
        ['eval/episode/cut', 'eval/episode/length', 'eval/episode/score']
        >>> metrics["eval/episode/length"] <= 21
        True
    """

    def __init__(self, env, policy, episodes=1, max_steps=10_000, seed=None):
        if not callable(policy):
            raise ValueError(f"Evaluator needs a callable policy, got {policy!r}.")
        for name, value in (("episodes", episodes), ("max_steps", max_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Evaluator {name} must be an int >= 1, got {value!r}."
                )
        self.driver = Driver(env, policy, video_workers=(), max_steps=max_steps)
        self.env = self.driver.envs[0]
        self.episodes = episodes
        self.max_steps = max_steps
        self.act_space = self.env.act_space
        self._seed = seed
        self._reset_count = 0
        self._finished = []
        self.driver.on_episode(self._finished.append)

    @property
    def policy(self):
        """The policy the episodes are played with (assignable)."""
        return self.driver.policy

    @policy.setter
    def policy(self, policy):
        self.driver.policy = policy

    def __call__(self):
        """Plays `episodes` episodes; returns the mean score and length."""
        played = [self._episode() for _ in range(self.episodes)]
        return {
            "eval/episode/score": float(np.mean([e.score for e in played])),
            "eval/episode/length": float(np.mean([e.length for e in played])),
            "eval/episode/cut": float(np.mean([e.cut for e in played])),
        }

    def close(self):
        """Closes the env."""
        self.driver.close()

    def _episode(self):
        seed = None
        if self._seed is not None:
            entropy = [self._seed, self._reset_count]
            seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        self._reset_count += 1
        self.driver.reset([seed])
        self._finished.clear()
        while not self._finished:
            self.driver.step()
        return self._finished[0]
