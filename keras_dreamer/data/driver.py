"""Acting: one loop that steps a batch of envs with a policy.

`Driver` serves training (`kd.data.Collector` fills the replay from its
steps) and evaluation (`keras-dreamer eval` plays episodes with it). It asks
the policy for one action per env, checks and encodes the actions, steps all
envs at once, and tracks each env's episode (score, length, `log/` values,
frames for a video). Whoever wants the results registers a listener:
`on_step(fn)` gets every recorded step, `on_episode(fn)` every finished
`Episode`. `EpisodeStats` is the listener that turns episodes into the
`episode/*` metrics and keeps the latest episode video.
"""

import dataclasses
import threading

import numpy as np

from keras_dreamer.batch import LOG_PREFIX
from keras_dreamer.envs import ProcessEnvs
from keras_dreamer.envs import as_env
from keras_dreamer.envs import make


@dataclasses.dataclass(frozen=True)
class Episode:
    """One finished (or cut) episode of one env, as a `Driver` pushes it.

    Args:
        worker: the index of the env that played it.
        score: the sum of its rewards.
        length: its obs, the first included.
        logs: the `log/` values of its last obs (floats).
        frames: None, or a dict of image key to uint8 `[T, H, W, C]` frames
            (its first `video_frames` obs) when the driver records a video of
            this env.
        cut: True when the driver cut it after `max_steps` env steps.

    Examples:
        >>> Episode(worker=0, score=1.0, length=8, logs={}).cut
        False
    """

    worker: int
    score: float
    length: int
    logs: dict
    frames: dict = None
    cut: bool = False


class Driver:
    """Steps a batch of envs with a batched policy and reports what happened.

    Each `step()` asks the policy for actions on the current obs of all envs
    (a dict of arrays `[N, ...]`: obs keys, `reward`, `is_first`, `is_last`,
    `is_terminal`; `log/` keys left out), checks and encodes them, records
    the step of every env and then steps all envs at once (in parallel for
    a `kd.envs.ProcessEnvs`). Recording a step means calling every `on_step`
    listener with `(step, worker)`, where `step` is the obs (without `log/`
    keys), its `action` and each entry of the policy's `extras()` for that
    env, and adding the obs to the env's episode; an `is_last` obs ends the
    episode and every `on_episode` listener gets its `Episode`. An episode
    cut short (an env process restarted, or a new `reset`) is dropped.

    Policies: a callable from batched obs to actions `[N, A]` in batch format
    (or `[N]` indices for a discrete space); optionally with `extras()`, a
    dict of per-env arrays `[N, ...]` for the step it just acted on, stored
    with each step (e.g. the agent's latents).

    Listeners run on the thread that steps the driver (on TensorFlow, a
    collector's tf.data thread), so they must be quick and thread-safe.

    Args:
        env: an env, an env name for `kd.envs.make`, or a list of either (one
            worker per env, stepped one after the other; all must share their
            spaces), or a `kd.envs.ProcessEnvs` (env i in its own process is
            worker i; all stepped at once).
        policy: the batched policy.
        seeds: the envs' first-reset seeds (one int or None per env), or None.
        video_workers: the envs whose episodes carry frames: a collection of
            worker indices, or "all".
        video_frames: the most frames an episode keeps (its first ones); None
            keeps all, 0 none.
        max_steps: cut an episode that has not ended after this many env
            steps: it is pushed with `cut=True` and that env's obs are
            ignored until its next episode. None never cuts.

    Examples:
        >>> import keras_dreamer as kd
        >>> env = kd.envs.make("default", size=16, max_steps=5)
        >>> driver = Driver(env, kd.data.RandomPolicy(env.act_space, seed=0), seeds=[0])
        >>> episodes = []
        >>> driver.on_episode(episodes.append)
        >>> for _ in range(6):
        ...     steps = driver.step()
        >>> episodes[0].length, sorted(episodes[0].frames)
        (6, ['image'])
    """

    def __init__(
        self,
        env,
        policy,
        seeds=None,
        video_workers=(0,),
        video_frames=None,
        max_steps=None,
    ):
        self.envs, self._batch = build_envs(env, type(self).__name__)
        self.obs_space = self._batch.obs_space
        self.act_space = self._batch.act_space
        self.policy = policy
        count = len(self.envs)
        self.seeds = [None] * count if seeds is None else list(seeds)
        if len(self.seeds) != count:
            raise ValueError(
                f"Driver got {len(self.seeds)} seeds for {count} env(s); pass one "
                "per env or None."
            )
        if video_workers == "all":
            video_workers = range(count)
        self.video_workers = frozenset(int(i) for i in video_workers)
        for name, value in (("video_frames", video_frames), ("max_steps", max_steps)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{name} must be an int >= 0 or None, got {value!r}.")
        self.video_frames = video_frames
        self.max_steps = max_steps
        self.image_keys = [k for k, s in self.obs_space.items() if s.is_image]
        self.env_steps = 0
        self._step_listeners = []
        self._episode_listeners = []
        self._obs = None
        self._episodes = [None] * count

    def __len__(self):
        return len(self.envs)

    @property
    def restarts(self):
        """Env process restarts so far (0 for in-process envs)."""
        return sum(getattr(self._batch, "restarts", None) or [0])

    def on_step(self, listener):
        """Calls `listener(step, worker)` for every recorded env step.

        Args:
            listener: a callable; `step` is a dict of the obs keys, `reward`,
                `is_first`, `is_last`, `is_terminal`, `action` and the
                policy's extras for that env.
        """
        self._step_listeners.append(listener)

    def on_episode(self, listener):
        """Calls `listener(episode)` with every finished `Episode`.

        Args:
            listener: a callable, e.g. `EpisodeStats.add` or
                `kd.DreamerReportCallback.add_episode`.
        """
        self._episode_listeners.append(listener)

    def remove_listener(self, listener):
        """Stops calling `listener` (registered with `on_step`/`on_episode`)."""
        for listeners in (self._step_listeners, self._episode_listeners):
            while listener in listeners:
                listeners.remove(listener)

    def reset(self, seeds=None):
        """Starts a new episode in every env; unfinished ones are dropped.

        Args:
            seeds: one reset seed (int or None) per env, or None for the
                driver's `seeds` (used by the first `step` anyway).
        """
        self._obs = list(self._batch.reset(self.seeds if seeds is None else seeds))
        self._episodes = [None] * len(self.envs)

    def step(self):
        """Acts once in every env; returns the number of env steps (N)."""
        if self._obs is None:
            self.reset()
        obs = [
            {k: v for k, v in o.items() if not k.startswith(LOG_PREFIX)}
            for o in self._obs
        ]
        batch = {key: np.stack([o[key] for o in obs]) for key in obs[0]}
        actions = self._actions(batch)
        extras = self._extras()
        for i, raw in enumerate(self._obs):
            step = {**obs[i], "action": actions[i]}
            for key, values in extras.items():  # stored with the step, per env
                step[key] = values[i]
            for listener in list(self._step_listeners):
                listener(step, i)
            self._record(i, raw)
        self._obs = list(self._batch.step(actions))
        self.env_steps += len(obs)
        return len(obs)

    def close(self):
        """Closes every env (and stops the env processes of a `ProcessEnvs`)."""
        self._batch.close()

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

    def _extras(self):
        """The policy's `extras()` (a plain callable has none), checked."""
        method = getattr(self.policy, "extras", None)
        extras = dict(method()) if method is not None else {}
        count = len(self.envs)
        for key, values in extras.items():
            values = np.asarray(values)
            if values.ndim == 0 or len(values) != count:
                raise ValueError(
                    f"The policy's extras()[{key!r}] has shape {values.shape}; "
                    f"expected one entry per env, [{count}, ...]."
                )
            extras[key] = values
        return extras

    def _record(self, i, obs):
        episode = self._episodes[i]
        if obs["is_first"]:
            episode = self._episodes[i] = _Progress(
                self.image_keys if i in self.video_workers else ()
            )
        if episode is None:  # cut: wait for the next episode
            return
        episode.add(obs, self.video_frames)
        if obs["is_last"]:
            self._finish(i, cut=False)
        elif self.max_steps is not None and episode.length > self.max_steps:
            self._finish(i, cut=True)

    def _finish(self, i, cut):
        progress, self._episodes[i] = self._episodes[i], None
        episode = progress.episode(i, cut)
        for listener in list(self._episode_listeners):
            listener(episode)


class _Progress:
    """The running score, length, logs and frames of one env's episode."""

    def __init__(self, image_keys):
        self.score = 0.0
        self.length = 0
        self.logs = {}
        self.frames = {key: [] for key in image_keys}

    def add(self, obs, video_frames):
        self.score += float(obs["reward"])
        self.length += 1
        self.logs = {
            key: float(value)
            for key, value in obs.items()
            if key.startswith(LOG_PREFIX)
        }
        for key, frames in self.frames.items():
            if video_frames is None or len(frames) < video_frames:
                frame = np.array(obs[key], np.uint8)
                frames.append(frame[..., None] if frame.ndim == 2 else frame)

    def episode(self, worker, cut):
        frames = None
        if self.frames and all(self.frames.values()):
            frames = {key: np.stack(value) for key, value in self.frames.items()}
        return Episode(worker, self.score, self.length, self.logs, frames, cut)


class EpisodeStats:
    """An episode listener: the `episode/*` metrics and the latest video.

    Register `stats.add` with `Driver.on_episode` (or call it). Thread-safe:
    a driver may push from another thread than the one that drains.

    Examples:
        >>> stats = EpisodeStats()
        >>> stats.add(Episode(0, score=2.0, length=5, logs={"log/x": 1.0}))
        >>> stats.add(Episode(1, score=4.0, length=7, logs={"log/x": 3.0}))
        >>> metrics = stats.drain()
        >>> metrics["episode/count"], metrics["episode/score"], metrics["episode/log/x"]
        (2.0, 3.0, 2.0)
        >>> stats.drain()
        {'episode/count': 0.0}
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = []
        self._video = None

    def add(self, episode):
        """Takes a finished `Episode`: counted until the next `drain()`; its
        frames (if any) become the latest video."""
        with self._lock:
            self._pending.append(episode)
            if episode.frames:
                self._video = episode.frames

    def pending(self):
        """The episodes added since the last `drain()`, oldest first."""
        with self._lock:
            return list(self._pending)

    def drain(self):
        """The metrics of the episodes added since the last call.

        Returns:
            A dict of floats: `episode/count`, and when one finished,
            `episode/score` and `episode/length` (means) and `episode/<log
            key>` (the mean of each `log/` key at the end of the episodes).
        """
        with self._lock:
            episodes, self._pending = self._pending, []
        metrics = {"episode/count": float(len(episodes))}
        if episodes:
            metrics["episode/score"] = float(np.mean([e.score for e in episodes]))
            metrics["episode/length"] = float(np.mean([e.length for e in episodes]))
            for key in episodes[0].logs:
                values = [e.logs[key] for e in episodes if key in e.logs]
                metrics[f"episode/{key}"] = float(np.mean(values))
        return metrics

    def video(self):
        """The frames of the latest episode that had frames, or None."""
        with self._lock:
            return None if self._video is None else dict(self._video)


def build_envs(env, owner="Driver"):
    """`(envs, batch)`: the envs as given and an object stepping all at once.

    Args:
        env: a `ProcessEnvs` (its own batch), or an env, a name or a list of
            either (one checked env per worker, stepped one after the other).
        owner: who asks, for the error messages.

    Returns:
        The list of envs (or the `ProcessEnvs`) and an object with
        `obs_space`, `act_space`, `reset(seeds)`, `step(actions)`, `close()`.

    Examples:
        >>> envs, batch = build_envs(["default", "default"])
        >>> len(envs), len(batch.reset([0, 1]))
        (2, 2)
    """
    if isinstance(env, ProcessEnvs):
        if env.closed:
            raise ValueError(f"{owner} got a closed ProcessEnvs.")
        return env, env
    items = env if isinstance(env, (list, tuple)) else [env]
    envs = [as_env(make(e) if isinstance(e, str) else e) for e in items]
    if not envs:
        raise ValueError(f"{owner} needs at least one env.")
    for i, other in enumerate(envs[1:], 1):
        if (other.obs_space, other.act_space) != (envs[0].obs_space, envs[0].act_space):
            raise ValueError(
                f"{owner} env {i} has spaces {other.obs_space}, {other.act_space} "
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
