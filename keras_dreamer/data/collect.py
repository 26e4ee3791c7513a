"""Online collection: a PyDataset that steps envs and samples the replay."""

import fractions
import math
import threading
import time

import numpy as np

from keras_dreamer.data.dataset import ReplayDataset
from keras_dreamer.data.driver import Driver
from keras_dreamer.data.driver import EpisodeStats
from keras_dreamer.data.replay import Replay
from keras_dreamer.envs import ProcessEnvs

DEFAULT_CAPACITY = 100_000


class RandomPolicy:
    """Uniformly random actions for a batch of envs.

    Args:
        act_space: the action space (`Discrete` or `Box`).
        seed: int seed, or None.

    Examples:
        >>> import numpy as np
        >>> from keras_dreamer.spaces import Discrete
        >>> policy = RandomPolicy(Discrete(3), seed=0)
        >>> policy({"is_first": np.array([True, False])}).shape
        (2, 3)
    """

    def __init__(self, act_space, seed=None):
        self.act_space = act_space
        self._rng = np.random.default_rng(seed)

    def __call__(self, obs):
        """One random action per env, as float32 `[N, A]` (one-hot if discrete)."""
        count = len(obs["is_first"])
        if self.act_space.discrete:
            return np.eye(self.act_space.n, dtype=np.float32)[
                self._rng.integers(self.act_space.n, size=count)
            ]
        return np.stack(
            [self.act_space.sample(self._rng).reshape(-1) for _ in range(count)]
        ).astype(np.float32)

    def extras(self):
        """What to store with the step besides the action: nothing (the
        replay stores zero latents for it)."""
        return {}

    def get_state(self):
        """The random generator's state (a JSON-serialisable dict)."""
        return self._rng.bit_generator.state

    def set_state(self, state):
        """Restores a state from `get_state`, e.g. when resuming a run."""
        self._rng.bit_generator.state = state


class CollectorStopped(RuntimeError):
    """Raised by a `Collector` asked for a batch after `stop()`.

    Examples:
        >>> import keras_dreamer as kd
        >>> collector = kd.data.Collector("default", batch_size=2, batch_length=8)
        >>> collector.stop()
        >>> try:
        ...     collector[0]
        ... except CollectorStopped as error:
        ...     print(error)
        the collector was stopped (fit has ended)
    """


class Collector(ReplayDataset):
    """Steps envs with a policy as the train ratio requires, then samples.

    A `keras.utils.PyDataset`, so `model.fit(collector, steps_per_epoch=N)`
    trains on it on every backend. Before the first batch it prefills the
    replay; then each batch first steps the envs `B * T / train_ratio` env
    steps (summed over envs; fractions carry over to later batches), adds
    them to the replay, and samples a `[B, T]` batch. So `train_ratio` is
    replayed steps per env step, as in DreamerV3 (32 for Atari, 512 for
    Crafter).

    The envs are stepped by a `kd.data.Driver` (`collector.driver`). Each
    replay step pairs obs t with the action the policy chose at obs t and
    the policy's `extras()` for that step, if it has them (worker i is env
    i). The policy is batched over envs: it gets a dict of arrays `[N, ...]`
    (obs keys, `reward`, `is_first`, `is_last`, `is_terminal`) and returns
    actions `[N, A]` in batch format (or `[N]` indices for a discrete
    space). A stateful policy resets its state where `is_first` is True.
    Assign `collector.policy` to change it later.

    Finished episodes go to `collector.episodes` (a `kd.data.EpisodeStats`),
    whose statistics accumulate until `drain_metrics()` returns them, and to
    every listener added with `add_episode_listener` (the way
    `kd.DreamerReportCallback` receives them). The frames of the latest
    finished episode of env 0 (every image key) are kept for
    `episode_video()`, DreamerV3's `policy_<key>` video.
    On TensorFlow, `fit` runs the dataset in a tf.data thread, samples two
    extra batches to infer the signature and prefetches ahead of training;
    all state changes happen under a lock.

    Args:
        env: an env, an env name for `kd.envs.make`, or a list of either
            (one worker per env, stepped one after the other in this
            process; all must share their spaces); or a `kd.envs.ProcessEnvs`
            (env i in its own process is worker i; all stepped at once; an
            env that crashes or hangs is restarted and its cut episode is
            not counted in the episode statistics).
        replay: a `Replay`; by default `Replay(100_000, seed=...)`.
        policy: callable from batched obs to batched actions; by default
            `RandomPolicy(act_space)`.
        batch_size: sequences per batch B.
        batch_length: steps per sequence T.
        train_ratio: replayed steps per env step (> 0).
        prefill: steps the replay holds before the first batch (a replay
            loaded to resume may hold them already); by default
            `batch_size * batch_length`. Collection goes on until some env
            has `batch_length` steps in the replay.
        seed: int seed of the envs' first resets, the default policy and
            the default replay, or None.
        episode_video_frames: the most frames of an episode that
            `episode_video()` keeps: the first this many (a longer episode's
            video stops there, played at the env's own speed); 0 keeps none.
        **kwargs: `keras.utils.PyDataset` options (`workers`,
            `max_queue_size`).

    Examples:
        >>> import keras_dreamer as kd
        >>> collector = kd.data.Collector(kd.envs.make("default", size=16),
        ...                               batch_size=2, batch_length=8, seed=0)
        >>> batch = collector[0]
        >>> batch["image"].shape, batch["action"].shape
        ((2, 8, 16, 16, 3), (2, 8, 3))
        >>> sorted(collector.drain_metrics())[:3]
        ['env/steps', 'episode/count', 'fps/env']
    """

    def __init__(
        self,
        env,
        replay=None,
        policy=None,
        batch_size=16,
        batch_length=64,
        train_ratio=32,
        prefill=None,
        seed=None,
        episode_video_frames=500,
        **kwargs,
    ):
        if (
            isinstance(episode_video_frames, bool)
            or not isinstance(episode_video_frames, int)
            or episode_video_frames < 0
        ):
            raise ValueError(
                "episode_video_frames must be an int >= 0, got "
                f"{episode_video_frames!r}."
            )
        driver = Driver(
            env,
            policy=None,
            video_workers=(0,) if episode_video_frames else (),
            video_frames=episode_video_frames,
        )
        if isinstance(train_ratio, bool) or not isinstance(train_ratio, (int, float)):
            raise ValueError(f"train_ratio must be a number > 0, got {train_ratio!r}.")
        if not 0 < train_ratio < math.inf:
            raise ValueError(f"train_ratio must be a number > 0, got {train_ratio!r}.")
        envs = driver.envs
        env_seeds, policy_seed, replay_seed = _seeds(seed, len(envs))
        driver.seeds = env_seeds
        if replay is None:
            replay = Replay(DEFAULT_CAPACITY, seed=replay_seed)
        if replay.capacity < len(envs) * batch_length:
            raise ValueError(
                f"Replay capacity {replay.capacity} is smaller than one sequence per "
                f"env ({len(envs)} envs x batch_length {batch_length}); raise it."
            )
        super().__init__(
            replay,
            driver.obs_space,
            driver.act_space,
            batch_size,
            batch_length,
            **kwargs,
        )
        self.driver = driver
        self.envs = envs
        self.train_ratio = float(train_ratio)
        if prefill is None:
            prefill = batch_size * batch_length
        if isinstance(prefill, bool) or not isinstance(prefill, int) or prefill < 0:
            raise ValueError(f"prefill must be an int >= 0, got {prefill!r}.")
        self.prefill = prefill
        if policy is None:
            policy = RandomPolicy(self.act_space, policy_seed)
        self.policy = policy
        self.env_steps = 0
        replay.metadata.update(
            obs_space={
                key: space.get_config() for key, space in self.obs_space.items()
            },
            act_space=self.act_space.get_config(),
        )
        # Exact fractions, so e.g. 32/3 env steps per batch never drifts.
        self._steps_per_batch = fractions.Fraction(batch_size * batch_length) / (
            fractions.Fraction(train_ratio)
        )
        self._credit = fractions.Fraction(0)
        self._prefilled = False
        self._drained_steps = 0
        self._drained_time = None
        self.episode_video_frames = episode_video_frames
        self.episodes = EpisodeStats()
        driver.on_step(lambda step, worker: self.replay.add(step, worker=worker))
        driver.on_episode(self.episodes.add)
        self._stopped = threading.Event()

    @property
    def policy(self):
        """The policy the envs are stepped with (assignable)."""
        return self.driver.policy

    @policy.setter
    def policy(self, policy):
        self.driver.policy = policy

    def add_episode_listener(self, listener):
        """Pushes every finished episode to `listener` (e.g. the callback's
        `add_episode`), first those finished since the last `drain_metrics()`.

        Args:
            listener: a callable taking a `kd.data.Episode`; it runs on the
                thread that collects (on TensorFlow, a tf.data thread).
        """
        with self._lock:
            for episode in self.episodes.pending():
                listener(episode)
            self.driver.on_episode(listener)

    def remove_episode_listener(self, listener):
        """Stops pushing episodes to `listener` (at once: no wait for a batch
        being collected)."""
        self.driver.remove_listener(listener)

    def stop(self, timeout=10.0):
        """Stops collecting: for the end of `fit`, normal or interrupted.

        A batch being collected (on TensorFlow, in a tf.data thread) stops
        after its current env step, and every later request raises
        `CollectorStopped` at once, so no data thread is left stepping envs
        while `fit`'s iterator is torn down. Waits up to `timeout` seconds
        for the batch in progress to end. The collector can still be read
        (`drain_metrics`, `episode_video`) and closed.

        Args:
            timeout: seconds to wait for a batch in progress.

        Examples:
            >>> import keras_dreamer as kd
            >>> collector = kd.data.Collector("default", batch_size=2, batch_length=8)
            >>> collector.stop()
            >>> collector.stopped
            True
        """
        self._stopped.set()
        if self._lock.acquire(timeout=timeout):
            self._lock.release()

    @property
    def stopped(self):
        """Whether `stop()` was called."""
        return self._stopped.is_set()

    def episode_video(self):
        """The frames of the latest finished episode of env 0.

        Returns:
            None before env 0 finished an episode (or without image keys, or
            with `episode_video_frames=0`); else a dict of image key to
            uint8 `[T, H, W, C]` frames (`[T, H, W, 1]` for 2-D images), the
            first `episode_video_frames` obs of the episode, first included.
        """
        return self.episodes.video()

    def collect(self, steps):
        """Step every env until at least `steps` env steps were added.

        Args:
            steps: env steps to collect, summed over envs (rounded up to a
                multiple of the number of envs).

        Returns:
            The number of env steps collected.
        """
        with self._lock:
            rounds = -(-int(steps) // len(self.envs))
            for _ in range(rounds):
                self._step_envs()
            return rounds * len(self.envs)

    def drain_metrics(self, episodes=True):
        """What was produced since the last call.

        Args:
            episodes: include the statistics of the episodes finished since
                the last call; False drops them (for a caller whose episode
                listener, e.g. `kd.DreamerReportCallback`, has them already).

        Returns:
            A dict of floats: `episode/score` and `episode/length` (means over
            the episodes finished since the last call; only present if one
            finished), `episode/<log key>` (the mean of each `log/` key at the
            end of those episodes), `episode/count`, `fps/env` (env steps per
            second since the last call), `env/steps` (total), and the
            replay's `replay/size`, `replay/episodes`, `replay/bytes`,
            `replay/memory_gb`.
            An episode's length counts its obs, including the first.
        """
        with self._lock:
            now = time.perf_counter()
            steps = self.env_steps - self._drained_steps
            elapsed = now - (self._drained_time or now)
            stats = self.episodes.drain()
            metrics = {
                "episode/count": stats.pop("episode/count"),
                "fps/env": steps / elapsed if elapsed > 0 else 0.0,
                "env/steps": float(self.env_steps),
            }
            if episodes:
                metrics.update(stats)
            else:
                del metrics["episode/count"]
            if isinstance(self.envs, ProcessEnvs):
                metrics["env/restarts"] = float(self.driver.restarts)
            metrics.update(super().drain_metrics())
            self._drained_steps = self.env_steps
            self._drained_time = now
            return metrics

    def close(self):
        """Close every env (and stop the env processes of a `ProcessEnvs`)."""
        self.driver.close()

    def _next_batch(self):
        self._check_stopped()
        self.prefill_replay()
        self._credit += self._steps_per_batch
        rounds = int(self._credit // len(self.envs))
        self._credit -= rounds * len(self.envs)
        for _ in range(rounds):
            self._step_envs()
        return super()._next_batch()

    def prefill_replay(self):
        """Fills the replay to `prefill` steps (and one whole sequence) now.

        The first batch does this anyway; call it earlier when something
        else samples the replay before training starts (e.g. a report).
        Does nothing once done.
        """
        with self._lock:
            if self._prefilled:
                return
            self.collect(max(0, self.prefill - len(self.replay)))
            while self.replay.num_sequences(self.sequence_length) == 0:
                self._step_envs()
            self._prefilled = True

    def _check_stopped(self):
        if self._stopped.is_set():
            raise CollectorStopped("the collector was stopped (fit has ended)")

    def _step_envs(self):
        self._check_stopped()
        if self._drained_time is None:
            self._drained_time = time.perf_counter()
        self.env_steps += self.driver.step()


def _seeds(seed, count):
    """Independent seeds for `count` envs, the policy and the replay."""
    if seed is None:
        return [None] * count, None, None
    children = np.random.SeedSequence(seed).spawn(count + 2)
    env_seeds = [int(child.generate_state(1)[0]) for child in children[:count]]
    return env_seeds, children[count], children[count + 1]
