"""Online collection: a PyDataset that steps envs and samples the replay."""

import fractions
import math
import threading
import time

import numpy as np

from keras_dreamer.batch import LOG_PREFIX
from keras_dreamer.data.dataset import ReplayDataset
from keras_dreamer.data.replay import Replay
from keras_dreamer.envs import ProcessEnvs
from keras_dreamer.envs import as_env
from keras_dreamer.envs import make

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

    Each replay step pairs obs t with the action the policy chose at obs t
    (worker i is env i). The policy is batched over envs: it gets a dict of
    arrays `[N, ...]` (obs keys, `reward`, `is_first`, `is_last`,
    `is_terminal`) and returns actions `[N, A]` in batch format (or `[N]`
    indices for a discrete space). A stateful policy resets its state where
    `is_first` is True. Assign `collector.policy` to change it later.

    Episode statistics accumulate until `drain_metrics()` returns them.
    The frames of the latest finished episode of env 0 (every image key)
    are kept for `episode_video()`, DreamerV3's `policy_<key>` video.
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
        envs, self._batch = _build_envs(env)
        if isinstance(train_ratio, bool) or not isinstance(train_ratio, (int, float)):
            raise ValueError(f"train_ratio must be a number > 0, got {train_ratio!r}.")
        if not 0 < train_ratio < math.inf:
            raise ValueError(f"train_ratio must be a number > 0, got {train_ratio!r}.")
        env_seeds, policy_seed, replay_seed = _seeds(seed, len(envs))
        if replay is None:
            replay = Replay(DEFAULT_CAPACITY, seed=replay_seed)
        if replay.capacity < len(envs) * batch_length:
            raise ValueError(
                f"Replay capacity {replay.capacity} is smaller than one sequence per "
                f"env ({len(envs)} envs x batch_length {batch_length}); raise it."
            )
        super().__init__(
            replay,
            self._batch.obs_space,
            self._batch.act_space,
            batch_size,
            batch_length,
            **kwargs,
        )
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
        self._env_seeds = env_seeds
        self._obs = [None] * len(envs)
        # Exact fractions, so e.g. 32/3 env steps per batch never drifts.
        self._steps_per_batch = fractions.Fraction(batch_size * batch_length) / (
            fractions.Fraction(train_ratio)
        )
        self._credit = fractions.Fraction(0)
        self._prefilled = False
        self._episode = [(0.0, 0, {}) for _ in range(len(envs))]
        self._finished = []
        self._drained_steps = 0
        self._drained_time = None
        if (
            isinstance(episode_video_frames, bool)
            or not isinstance(episode_video_frames, int)
            or episode_video_frames < 0
        ):
            raise ValueError(
                "episode_video_frames must be an int >= 0, got "
                f"{episode_video_frames!r}."
            )
        self.episode_video_frames = episode_video_frames
        self._image_keys = [k for k, s in self.obs_space.items() if s.is_image]
        self._frames = {key: [] for key in self._image_keys}
        self._video = None
        self._stopped = threading.Event()

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
        with self._lock:
            return None if self._video is None else dict(self._video)

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

    def drain_metrics(self):
        """What was produced since the last call.

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
            metrics = {
                "episode/count": float(len(self._finished)),
                "fps/env": steps / elapsed if elapsed > 0 else 0.0,
                "env/steps": float(self.env_steps),
            }
            if self._finished:
                scores, lengths, logs = zip(*self._finished)
                metrics["episode/score"] = float(np.mean(scores))
                metrics["episode/length"] = float(np.mean(lengths))
                for key in logs[0]:
                    values = [log[key] for log in logs if key in log]
                    metrics[f"episode/{key}"] = float(np.mean(values))
            if hasattr(self._batch, "restarts"):
                metrics["env/restarts"] = float(sum(self._batch.restarts))
            metrics.update(super().drain_metrics())
            self._finished = []
            self._drained_steps = self.env_steps
            self._drained_time = now
            return metrics

    def close(self):
        """Close every env (and stop the env processes of a `ProcessEnvs`)."""
        self._batch.close()

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
        if self._obs[0] is None:
            self._obs = list(self._batch.reset(self._env_seeds))
        obs = [
            {k: v for k, v in o.items() if not k.startswith(LOG_PREFIX)}
            for o in self._obs
        ]
        actions = self._actions(
            {key: np.stack([o[key] for o in obs]) for key in obs[0]}
        )
        extras = getattr(self.policy, "extras", dict)()  # e.g. latents to store
        for i in range(len(obs)):
            step = {key: value[i] for key, value in extras.items()}
            self.replay.add({**obs[i], "action": actions[i], **step}, worker=i)
            if i == 0:
                self._record_frame(self._obs[0])
            self._account(i, self._obs[i])
        # One step of all envs at once (in parallel for `ProcessEnvs`).
        self._obs = list(self._batch.step(actions))
        self.env_steps += len(obs)

    def _actions(self, obs):
        """The policy's actions for all envs, checked, as float32 `[N, A]`."""
        count, space = len(self.envs), self.act_space
        actions = np.asarray(self.policy(obs))
        flat = actions.reshape(count, -1) if actions.ndim > 2 else actions
        valid = flat.shape == (count, space.width)
        if not valid and not (space.discrete and actions.shape == (count,)):
            expected = f"({count}, {space.width})"
            if space.discrete:
                expected += f" or ({count},)"
            elif len(space.shape) > 1:
                expected += f" or ({count}, {', '.join(map(str, space.shape))})"
            raise ValueError(
                f"The policy returned actions of shape {actions.shape}; expected "
                f"{expected} for {count} env(s) and {space}."
            )
        try:
            return np.stack([self._encode(action) for action in flat])
        except ValueError as err:
            raise ValueError(f"The policy returned an invalid action: {err}") from None

    def _encode(self, action):
        space = self.act_space
        if not space.discrete:
            action = np.asarray(action, np.float32).reshape(space.shape)
        return space.encode(action)

    def _record_frame(self, obs):
        if not self._image_keys or not self.episode_video_frames:
            return
        if obs["is_first"]:
            self._frames = {key: [] for key in self._image_keys}
        for key, frames in self._frames.items():
            if len(frames) < self.episode_video_frames:
                frame = np.array(obs[key], np.uint8)
                frames.append(frame[..., None] if frame.ndim == 2 else frame)
        if obs["is_last"] and all(self._frames.values()):
            self._video = {k: np.stack(v) for k, v in self._frames.items()}
            self._frames = {key: [] for key in self._image_keys}

    def _account(self, i, obs):
        score, length, _ = (0.0, 0, {}) if obs["is_first"] else self._episode[i]
        logs = {
            key: float(value)
            for key, value in obs.items()
            if key.startswith(LOG_PREFIX)
        }
        self._episode[i] = (score + float(obs["reward"]), length + 1, logs)
        if obs["is_last"]:
            self._finished.append(self._episode[i])


def _build_envs(env):
    """`(envs, batch)`: the envs as given and an object stepping all at once.

    `env` is a `ProcessEnvs` (its own batch), or an env, a name or a list of
    either (one checked env per worker, stepped one after the other).
    """
    if isinstance(env, ProcessEnvs):
        if env.closed:
            raise ValueError("Collector got a closed ProcessEnvs.")
        return env, env
    items = env if isinstance(env, (list, tuple)) else [env]
    envs = [as_env(make(e) if isinstance(e, str) else e) for e in items]
    if not envs:
        raise ValueError("Collector needs at least one env.")
    for i, other in enumerate(envs[1:], 1):
        if (other.obs_space, other.act_space) != (envs[0].obs_space, envs[0].act_space):
            raise ValueError(
                f"Collector env {i} has spaces {other.obs_space}, {other.act_space} "
                f"but env 0 has {envs[0].obs_space}, {envs[0].act_space}. All envs "
                "must match."
            )
    return envs, _SerialEnvs(envs)


class _SerialEnvs:
    """A list of in-process envs behind `ProcessEnvs`'s reset/step/close."""

    def __init__(self, envs):
        self.envs = envs
        self.obs_space = envs[0].obs_space
        self.act_space = envs[0].act_space

    def reset(self, seeds):
        return [env.reset(seed=seed) for env, seed in zip(self.envs, seeds)]

    def step(self, actions):
        return [env.step(action) for env, action in zip(self.envs, actions)]

    def close(self):
        for env in self.envs:
            env.close()


def _seeds(seed, count):
    """Independent seeds for `count` envs, the policy and the replay."""
    if seed is None:
        return [None] * count, None, None
    children = np.random.SeedSequence(seed).spawn(count + 2)
    env_seeds = [int(child.generate_state(1)[0]) for child in children[:count]]
    return env_seeds, children[count], children[count + 1]
