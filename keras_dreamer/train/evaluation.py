"""Evaluating a trained run: its policy from a logdir, episodes played with it.

`load_policy(logdir)` rebuilds a run's agent from its operative config
(`LOGDIR/config.gin`) and a checkpoint, and returns its stateful policy.
`evaluate_run(logdir)` plays episodes with that policy on the run's env
(in env processes when the run trained with them), stepped by a
`kd.data.Driver` like training's, and writes
`LOGDIR/eval/<step>/episodes.jsonl` (and GIFs with `video=True`). Neither
trains nor writes anything else of the run: its logs, checkpoints and
replay are only read.
"""

import json
import os

import gin
import numpy as np

from keras_dreamer import checkpoint
from keras_dreamer import envs
from keras_dreamer.data.driver import Driver
from keras_dreamer.logger.media import gif_bytes
from keras_dreamer.train import job
from keras_dreamer.train.errors import ConfigError
from keras_dreamer.train.factories import env_factory
from keras_dreamer.train.factories import make_agent
from keras_dreamer.train.factories import make_env
from keras_dreamer.train.factories import make_optimizer
from keras_dreamer.train.logdir import check_resumed_spaces

EVAL_DIR = "eval"
EPISODES_FILE = "episodes.jsonl"


def load_policy(logdir, step=None, mode="eval", seed=0):
    """The trained policy of a run, from its logdir.

    Builds the run's agent from `LOGDIR/config.gin` (env, sizes and seed
    are the run's), loads the checkpoint's weights and returns a new
    stateful policy, used like `agent.policy`: `actions = policy(obs)` on
    obs batched over envs. Clears gin's config (it parses the run's).

    Args:
        logdir: the run directory written by `keras-dreamer train`.
        step: the train step of the checkpoint (default: the latest).
        mode: "eval" or "train" (see `kd.Agent.make_policy`).
        seed: seed of the policy's action and latent noise.

    Returns:
        A `kd.AgentPolicy`; its agent is `policy.agent` and the
        checkpoint's step `policy.checkpoint_step`.

    Raises:
        ConfigError: no such run directory, no checkpoint (or not the
            given step), a world-model-only run (no policy), or a
            checkpoint that does not fit the run's config.

    Examples:
        >>> import tempfile
        >>> try:
        ...     load_policy(tempfile.mkdtemp())
        ... except ConfigError as error:
        ...     print(str(error).split(" in ")[0])
        no checkpoint
    """
    agent, state = _load_agent(logdir, step)
    policy = agent.make_policy(mode, seed=seed)
    policy.checkpoint_step = int(state["step"])
    return policy


def evaluate_run(
    logdir,
    episodes=10,
    step=None,
    mode="eval",
    video=False,
    seed=None,
    max_steps=10_000,
):
    """Plays episodes with a run's trained policy and writes their scores.

    The episodes run on the run's env (`make_env` of its config, with
    another seed than training's), in `train.envs` env processes when the
    run used more than one. Writes one JSON line per episode
    (`episode`, `score`, `length`, `step`, `cut`) to
    `LOGDIR/eval/<step>/episodes.jsonl` (replaced if it exists) and, with
    `video`, `episode_<i>.gif` of the first image key beside it.

    Args:
        logdir: the run directory.
        episodes: episodes to play (>= 1).
        step: the train step of the checkpoint (default: the latest).
        mode: "eval" or "train" policy.
        video: also write each episode as a GIF.
        seed: seed of the envs and the policy (default: derived from the
            run's seed).
        max_steps: the most env steps of one episode: a longer one is cut
            there (`cut` is true in its line) and its env starts anew.

    Returns:
        A dict: `step`, `scores`, `lengths`, `mean`, `std` and `directory`
        (where the files are).

    Raises:
        ConfigError: as `load_policy`, or `episodes` < 1.

    Examples:
        >>> try:
        ...     evaluate_run("no/such/run")
        ... except ConfigError as error:
        ...     print(str(error).split(":")[0])
        no run directory 'no/such/run'
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"episodes must be an int >= 1, got {episodes!r}.")
    agent, state = _load_agent(logdir, step)
    settings = gin.get_bindings(job.train)
    if seed is None:
        seed = int(
            np.random.SeedSequence([settings.get("seed", 0), 3]).generate_state(1)[0]
        )
    policy = agent.make_policy(mode, seed=seed)
    count = min(int(settings.get("envs", 1)), episodes)
    if count > 1:
        env = envs.ProcessEnvs(env_factory(seed=seed), count, seed=[seed, 1])
    else:
        env = make_env(seed=seed)
    try:
        driver = Driver(
            env,
            policy,
            video_workers="all" if video else (),
            max_steps=max_steps,
        )
    except BaseException:
        env.close()
        raise
    episode_list = _EpisodeList(episodes)
    driver.on_episode(episode_list.add)
    try:
        played = _play(driver, episode_list, seed)
    finally:
        driver.close()
    ckpt_step = int(state["step"])
    directory = os.path.join(logdir, EVAL_DIR, str(ckpt_step))
    _write(directory, played, ckpt_step, _video_key(driver) if video else None)
    scores = [episode.score for episode in played]
    return {
        "step": ckpt_step,
        "scores": scores,
        "lengths": [episode.length for episode in played],
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "directory": directory,
    }


def _load_agent(logdir, step):
    """The run's agent, compiled, with the checkpoint's weights; its state."""
    if not os.path.isdir(logdir):
        raise ConfigError(f"no run directory {logdir!r}: it does not exist.")
    paths = checkpoint.checkpoint_dirs(os.path.join(logdir, "ckpt"))
    if not paths:
        raise ConfigError(f"no checkpoint in {logdir!r} (no {logdir}/ckpt/<step>).")
    steps = [int(os.path.basename(p)) for p in paths]
    if step is None:
        path = paths[-1]
    elif int(step) in steps:
        path = paths[steps.index(int(step))]
    else:
        raise ConfigError(
            f"no checkpoint of step {step} in {logdir!r}; there are steps "
            f"{', '.join(map(str, steps))}."
        )
    state = checkpoint.read_state(path)
    kind = state.get("model", "world_model")
    if kind == "world_model":
        raise ConfigError(
            f"the run {logdir!r} trained a world model only (train.agent=False): "
            "there is no policy to evaluate."
        )
    if kind != "agent":
        raise ConfigError(f"the checkpoint {path} holds a {kind!r}, not an agent.")
    _parse_config(logdir)
    settings = gin.get_bindings(job.train)
    env = make_env(seed=0)
    obs_space, act_space = env.obs_space, env.act_space
    try:
        check_resumed_spaces(env, state, {}, path)
    finally:
        env.close()
    agent = make_agent(obs_space, act_space, seed=settings.get("seed", 0))
    agent.compile(optimizer=make_optimizer())
    try:
        checkpoint.restore(path, agent)
    except (ValueError, KeyError, OSError) as error:
        # Keras's first sentence says how many weights did not fit.
        first = (str(error).strip() or type(error).__name__).split(". ")[0]
        raise ConfigError(
            f"the checkpoint {path} holds another model than the agent its "
            f"config.gin builds ({first.rstrip('.')})."
        ) from None
    return agent, state


def _parse_config(logdir):
    path = os.path.join(logdir, "config.gin")
    if not os.path.isfile(path):
        raise ConfigError(f"no config.gin in {logdir!r}: not a run directory.")
    gin.clear_config()
    try:
        gin.parse_config_file(path, skip_unknown=True)
    except Exception as error:
        raise ConfigError(f"bad config {path!r}: {error}") from None


class _EpisodeList:
    """An episode listener that keeps the episodes to evaluate, in the order
    they started: each env's episode gets the next place when it starts, while
    places are left; an env whose episode was cut plays no more until the next
    round (a reset of all envs)."""

    def __init__(self, episodes):
        self.episodes = episodes
        self.played = []  # an Episode, or None while it runs
        self._place = {}  # worker -> its running episode's index in `played`

    @property
    def running(self):
        """Whether an env plays an episode that has a place."""
        return bool(self._place)

    def start_round(self, count):
        """All `count` envs were reset: each gets a place while any is left."""
        self._place = {}
        for worker in range(count):
            self._take_place(worker)

    def add(self, episode):
        index = self._place.pop(episode.worker, None)
        if index is None:  # no place: an episode beyond those asked for
            return
        self.played[index] = episode
        if not episode.cut:  # the env's next episode starts now
            self._take_place(episode.worker)

    def _take_place(self, worker):
        if len(self.played) < self.episodes:
            self._place[worker] = len(self.played)
            self.played.append(None)


def _play(driver, episode_list, seed):
    """Plays until `episode_list` holds all its episodes; returns them."""
    # A new round only after an episode was cut (its env played no more).
    while len(episode_list.played) < episode_list.episodes:
        played = len(episode_list.played)
        seeds = np.random.SeedSequence([seed, 2, played]).generate_state(len(driver))
        driver.reset(seeds.tolist())
        episode_list.start_round(len(driver))
        while episode_list.running:
            driver.step()
    return episode_list.played


def _video_key(driver):
    """The image key of the eval GIFs: the first one of shape (H, W, C)."""
    keys = [k for k in driver.image_keys if len(driver.obs_space[k].shape) == 3]
    return keys[0] if keys else None


def _write(directory, played, step, video_key):
    os.makedirs(directory, exist_ok=True)
    lines = []
    for index, episode in enumerate(played):
        lines.append(
            json.dumps(
                {
                    "episode": index,
                    "score": episode.score,
                    "length": episode.length,
                    "step": step,
                    "cut": episode.cut,
                }
            )
        )
        if video_key is not None and episode.frames:
            path = os.path.join(directory, f"episode_{index}.gif")
            with open(path, "wb") as file:
                file.write(gif_bytes(episode.frames[video_key]))
    path = os.path.join(directory, EPISODES_FILE)
    with open(path + ".tmp", "w") as file:
        file.write("".join(line + "\n" for line in lines))
    os.replace(path + ".tmp", path)
