"""Envs in processes: N envs stepped at once, each in its own process.

`ProcessEnvs` runs each env in a process of its own (started with the
`spawn` method, never `fork`, since JAX and TensorFlow run threads in the
parent) and steps all of them at once: it sends every env its action, then
waits for all replies. The envs' own code runs unchanged.

How data travels:

- Observation arrays (every key of `obs_space`, e.g. the image) are written
  by the env process into one shared-memory block (`multiprocessing.
  shared_memory`) and copied out by the parent once per step, one copy of
  `[N, ...]` per key; they are never pickled.
- Everything else (the action, `reward`, the flags, `log/` scalars, errors)
  goes over a pipe.

Recovery: an env process that raises, dies or sends no reply within
`timeout` seconds is killed and started again, with an `EnvRestartWarning`
that names the env and the error (with the env process's traceback). The new
env's first obs (`is_first=True`) takes the place of the step that failed,
so the unfinished episode is cut there; everything collected before stays.
An env that fails `retries + 1` times in a row (no successful step in
between) raises `EnvProcessError`.

Standby processes: with `standby=k`, k more env processes keep a next
episode ready. When an env's episode ends, its next first obs comes from
the standby whose reset was started first (its reset already ran, or runs
on while the other envs step); the finished env process resets in the
background and joins the standbys. A slow reset (Crafter builds a whole world
in it) then no longer stalls all N envs, which step in lockstep. Standbys
are taken first-in first-out, so which world an env gets next never depends
on timing.

Shutdown: `close()` stops and joins every env process and frees the shared
memory; it also runs when the `ProcessEnvs` is garbage collected and at
interpreter exit. Each env process also watches its parent and exits when
the parent is gone (killed by SIGTERM or SIGKILL), so no env process
outlives its run.
"""

import collections
import functools
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
import warnings
import weakref
from multiprocessing import connection
from multiprocessing import shared_memory

import numpy as np

from keras_dreamer.envs.base import as_env
from keras_dreamer.envs.base import native_action

DEFAULT_TIMEOUT = 60.0
DEFAULT_START_TIMEOUT = 120.0
# Seconds between an env process's checks that its parent still lives.
PARENT_POLL = 0.25
# Seconds an env process gets to close its env before it is terminated.
CLOSE_GRACE = 5.0
START_HINT = (
    "; its own error is on stderr above. (Env processes are started with "
    "'spawn', which imports the main script again: a script must create "
    'ProcessEnvs under `if __name__ == "__main__":`.)'
)


class EnvProcessError(RuntimeError):
    """An env process failed in a way that cannot be recovered.

    Raised when an env cannot be built or started, or when one env failed
    `retries + 1` times in a row. The message names the env and carries the
    env process's traceback.

    Examples:
        >>> import keras_dreamer as kd
        >>> try:
        ...     kd.envs.ProcessEnvs("no_such_env", 1)
        ... except kd.envs.EnvProcessError as error:
        ...     print("Unknown env name 'no_such_env'" in str(error))
        True
    """


class EnvRestartWarning(RuntimeWarning):
    """An env process crashed or hung and was restarted (its episode is cut).

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():  # e.g. to turn restarts into errors
        ...     warnings.simplefilter("error", EnvRestartWarning)
    """


class ProcessEnvs:
    """`count` envs, each in its own process, stepped all at once.

    Use it as the collector's env (`kd.data.Collector(kd.envs.ProcessEnvs(
    "crafter", 4), ...)`) or on its own. `step(actions)` sends every env its
    action and waits for all; `reset(seeds)` starts new episodes in all envs.
    Both return a list of `count` obs dicts (the env protocol's obs; arrays
    are fresh copies, safe to keep).

    Args:
        env: what to build in each process: an env name for `kd.envs.make`
            (e.g. `"crafter"`) or a picklable callable returning an env (a
            top-level function or class, or a `functools.partial` of one;
            not a lambda or a local function).
        count: number of envs (>= 1).
        env_kwargs: keyword arguments for the name or callable (the same
            for every env; give each env its own seed through `reset`).
        seed: int, sequence of ints, or None: seeds the first episode of
            each standby process and of an env after a restart (each gets
            its own seed derived from this one).
        timeout: seconds an env may take to answer a `step` or `reset`;
            past it the env process counts as hung and is restarted.
        start_timeout: seconds an env process may take to start and build
            its env.
        retries: failures in a row (without a successful step in between)
            one env may have before `EnvProcessError` is raised.
        shared_memory: if True (default), observation arrays travel in
            shared memory; if False, pickled over the pipe (slower for
            images; kept to measure the difference).
        standby: extra env processes (>= 0) that reset ahead: an env whose
            episode ended starts its next episode from a standby that has
            already reset, while the finished process resets in the
            background (see the module docstring). Worth it for envs whose
            reset is slow against a step (Crafter); 0 resets each env in its
            own process, in the step after its episode's last obs.

    Attributes:
        restarts: restarts per env process: the `count` first processes,
            then the `standby` ones (processes trade places with standbys,
            so index i is a process, not the env the collector calls i).

    Raises:
        ValueError: `count` < 1, `env` is not a name or a picklable
            callable, or a bad `timeout`, `start_timeout` or `retries`.
        EnvProcessError: an env could not be built in its process (the
            message holds that process's traceback), or the envs' spaces
            differ.

    Examples:
        >>> import numpy as np
        >>> import keras_dreamer as kd
        >>> with kd.envs.ProcessEnvs("default", 2, env_kwargs={"size": 16}) as envs:
        ...     first = envs.reset(seeds=[0, 1])
        ...     obs = envs.step(np.eye(3, dtype=np.float32)[[1, 2]])
        >>> len(obs), obs[0]["image"].shape, bool(first[1]["is_first"])
        (2, (16, 16, 3), True)
    """

    def __init__(
        self,
        env,
        count,
        env_kwargs=None,
        seed=None,
        timeout=DEFAULT_TIMEOUT,
        start_timeout=DEFAULT_START_TIMEOUT,
        retries=3,
        shared_memory=True,
        standby=0,
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"ProcessEnvs count must be an int >= 1, got {count!r}.")
        for name, value in (("timeout", timeout), ("start_timeout", start_timeout)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value < float("inf")
            ):
                raise ValueError(
                    f"ProcessEnvs {name} must be a number of seconds > 0, "
                    f"got {value!r}."
                )
        for name, value in (("retries", retries), ("standby", standby)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"ProcessEnvs {name} must be an int >= 0, got {value!r}."
                )
        self.name = env if isinstance(env, str) else _describe(env)
        self._factory = _pickle_factory(env, dict(env_kwargs or {}))
        self.count = count
        self.timeout = float(timeout)
        self.start_timeout = float(start_timeout)
        self.retries = retries
        self.shared_memory = bool(shared_memory)
        self.standby = standby
        processes = count + standby
        self.restarts = [0] * processes
        self._seed = seed
        self._streak = [0] * processes
        self._failure = None
        # Env i runs in process _rows[i]; the standbys wait in FIFO order,
        # each with a reset sent whose reply has not been read yet.
        self._rows = list(range(count))
        self._standbys = collections.deque(range(count, processes))
        self._ended = [False] * count
        self._context = multiprocessing.get_context("spawn")
        self._state = _State(processes)
        self._finalizer = weakref.finalize(self, self._state.shutdown)
        self.obs_space = None
        self.act_space = None
        try:
            self._start_all()
        except BaseException:
            self.close()
            raise

    def __len__(self):
        return self.count

    def __repr__(self):
        return (
            f"ProcessEnvs({self.name!r}, count={self.count}, "
            f"standby={self.standby}, restarts={sum(self.restarts)})"
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def pids(self):
        """The process ids of the env processes now running (None if closed):
        the `count` first processes, then the standbys."""
        return [None if p is None else p.pid for p in self._state.processes]

    @property
    def closed(self):
        """True once `close` ran."""
        return not self._finalizer.alive

    def reset(self, seeds=None):
        """Starts a new episode in every env, all at once.

        Args:
            seeds: None, or a list of `count` ints or Nones: each env's
                `reset(seed=...)`.

        Returns:
            A list of `count` first obs (`is_first=True`).
        """
        self._check_open()
        seeds = [None] * self.count if seeds is None else list(seeds)
        if len(seeds) != self.count:
            raise ValueError(
                f"ProcessEnvs.reset needs {self.count} seeds (one per env), "
                f"got {len(seeds)}."
            )
        return self._call(
            [("reset", None if s is None else int(s)) for s in seeds], "reset"
        )

    def step(self, actions):
        """Steps every env with its action, all at once.

        Args:
            actions: `count` actions in batch format, e.g. a float32 array
                `[count, A]` (one-hot for `Discrete`) or `count` indices.

        Returns:
            A list of `count` obs. An env that failed and was restarted
            returns its new first obs (`is_first=True`). With standbys, an
            env whose last obs was `is_last` returns a standby's first obs.

        Raises:
            ValueError: an action lies outside `act_space` (checked here,
                before any env is stepped).
            EnvProcessError: an env failed `retries + 1` times in a row.
        """
        self._check_open()
        if len(actions) != self.count:
            raise ValueError(
                f"ProcessEnvs.step needs {self.count} actions (one per env), "
                f"got {len(actions)}."
            )
        for i, action in enumerate(actions):
            native_action(self.act_space, action, f"ProcessEnvs env {i}")
        messages = [
            None if self._ended[i] and self.standby else ("step", action)
            for i, action in enumerate(actions)
        ]
        return self._call(messages, "step")

    def close(self):
        """Stops and joins every env process and frees the shared memory.

        Safe to call more than once.
        """
        self._finalizer()

    # -- internals ---------------------------------------------------------

    def _check_open(self):
        if self.closed:
            raise ValueError("ProcessEnvs is closed.")
        if self._failure is not None:
            raise EnvProcessError(
                f"ProcessEnvs stopped after an env failed for good: {self._failure}"
            )

    def _start_all(self):
        processes = range(self.count + self.standby)
        for i in processes:
            self._spawn(i)
        spaces = self._wait_ready(processes)
        failed = {i: info for i, info in spaces.items() if info[0] != "ready"}
        if failed:
            i, (_, detail) = next(iter(failed.items()))
            raise EnvProcessError(
                f"ProcessEnvs could not start env {i} ({self.name}): {detail}"
            )
        self.obs_space, self.act_space = spaces[0][1]
        for i in processes[1:]:
            if spaces[i][1] != (self.obs_space, self.act_space):
                raise EnvProcessError(
                    f"ProcessEnvs env {i} ({self.name}) has spaces {spaces[i][1]} "
                    f"but env 0 has {(self.obs_space, self.act_space)}; all must "
                    "match."
                )
        layout, size = _layout(self.obs_space, len(processes))
        if self.shared_memory and size:
            block = shared_memory.SharedMemory(create=True, size=size)
            self._state.block = block
            self._state.views = {
                key: np.ndarray((len(processes), *shape), dtype, block.buf, offset)
                for key, (offset, shape, dtype) in layout.items()
            }
        self._layout = layout
        for i in processes:
            self._attach(i)
        for i in self._standbys:
            self._send(i, ("reset", self._process_seed(i)))

    def _spawn(self, i):
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker,
            args=(child, self._factory, i, os.getpid()),
            name=f"keras-dreamer-env-{i}",
            daemon=True,
        )
        process.start()
        child.close()
        self._state.processes[i] = process
        self._state.conns[i] = parent

    def _attach(self, i):
        name = self._state.block.name if self._state.block is not None else None
        self._state.conns[i].send(("attach", (name, self._layout if name else None)))

    def _wait_ready(self, indices):
        """`{i: ("ready", spaces) or ("failed", detail)}` for new env processes."""
        replies = self._gather(list(indices), self.start_timeout, "start")
        return {
            i: ("ready", payload) if kind == "ok" else ("failed", payload)
            for i, (kind, payload) in replies.items()
        }

    def _gather(self, indices, timeout, what):
        """One reply of each env: `{i: ("ok", payload) or ("failed", why)}`."""
        conns = {self._state.conns[i]: i for i in indices}
        replies = {}
        deadline = time.monotonic() + timeout
        while conns:
            ready = connection.wait(list(conns), max(0.0, deadline - time.monotonic()))
            if not ready:
                for i in conns.values():
                    replies[i] = (
                        "failed",
                        f"no reply to {what} within {timeout:g} s (hung); killed it",
                    )
                break
            for conn in ready:
                i = conns.pop(conn)
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    process = self._state.processes[i]
                    process.join(1.0)
                    hint = START_HINT if what == "start" else ""
                    replies[i] = (
                        "failed",
                        f"the env process died (exit code {process.exitcode}) "
                        f"during {what}{hint}",
                    )
                    continue
                replies[i] = ("ok", payload) if kind == "ok" else ("failed", payload)
        return replies

    def _send(self, i, message):
        try:
            self._state.conns[i].send(message)
        except (BrokenPipeError, OSError):
            pass  # the reply's EOF reports the dead process

    def _call(self, messages, what):
        """Sends env i `messages[i]` (None: env i takes the next standby)
        and returns every env's obs."""
        swapped = []
        for i, message in enumerate(messages):
            if message is None:
                finished = self._rows[i]
                self._rows[i] = self._standbys.popleft()
                self._send(finished, ("reset", None))
                self._standbys.append(finished)
                swapped.append(self._rows[i])
            else:
                self._send(self._rows[i], message)
        rows = list(self._rows)
        # The envs step while this waits for the standbys' resets.
        replies = self._gather(swapped, self.timeout, "reset")
        replies.update(
            self._gather([p for p in rows if p not in swapped], self.timeout, what)
        )
        smalls = []
        for i, p in enumerate(rows):
            kind, payload = replies[p]
            if kind == "ok":
                self._streak[p] = 0
            else:
                payload = self._recover(p, payload, what if messages[i] else "reset")
            self._ended[i] = bool(payload["is_last"])
            smalls.append(payload)
        batch = {key: view[rows] for key, view in self._state.views.items()}
        return [
            {**{key: array[i] for key, array in batch.items()}, **small}
            for i, small in enumerate(smalls)
        ]

    def _recover(self, i, detail, what):
        """Restarts env `i` after a failure; returns its first obs's small part."""
        while True:
            self._streak[i] += 1
            self._stop(i)
            if self._streak[i] > self.retries:
                self._failure = (
                    f"ProcessEnvs env {i} ({self.name}) failed {self._streak[i]} "
                    f"times in a row (retries={self.retries}); the last time in "
                    f"{what}: {detail}"
                )
                raise EnvProcessError(self._failure)
            self.restarts[i] += 1
            warnings.warn(
                f"ProcessEnvs env {i} ({self.name}) failed in {what}: {detail}\n"
                f"Restarted it (restart {self.restarts[i]}); its unfinished "
                "episode is cut, the steps already collected are kept.",
                EnvRestartWarning,
                stacklevel=4,
            )
            self._spawn(i)
            kind, payload = self._wait_ready([i])[i]
            if kind == "ready" and payload != (self.obs_space, self.act_space):
                kind, payload = "failed", f"the restarted env has spaces {payload}"
            if kind == "ready":
                self._attach(i)
                self._state.conns[i].send(("reset", self._process_seed(i)))
                kind, payload = self._gather([i], self.timeout, "reset")[i]
                if kind == "ok":
                    return payload
            detail, what = payload, "restart"

    def _process_seed(self, i):
        if self._seed is None:
            return None
        entropy = [*np.atleast_1d(self._seed).tolist(), i, self.restarts[i]]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def _stop(self, i):
        _kill(self._state.processes[i])
        self._state.conns[i].close()
        self._state.processes[i] = None
        self._state.conns[i] = None


class _State:
    """The processes, pipes and shared memory, apart from `ProcessEnvs` so
    that its finalizer can release them without keeping it alive."""

    def __init__(self, count):
        self.processes = [None] * count
        self.conns = [None] * count
        self.block = None
        self.views = {}

    def shutdown(self):
        for conn in self.conns:
            if conn is not None:
                try:
                    conn.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + CLOSE_GRACE
        for process in self.processes:
            if process is not None:
                process.join(max(0.0, deadline - time.monotonic()))
        for i, process in enumerate(self.processes):
            _kill(process)
            if self.conns[i] is not None:
                self.conns[i].close()
            self.processes[i] = self.conns[i] = None
        self.views = {}
        if self.block is not None:
            self.block.close()
            try:
                self.block.unlink()
            except FileNotFoundError:
                pass
            self.block = None


def _kill(process):
    if process is None:
        return
    if process.is_alive():
        process.terminate()
        process.join(1.0)
    if process.is_alive():
        process.kill()
        process.join()
    else:
        process.join()


def _layout(obs_space, count):
    """`{key: (offset, shape, dtype)}` of `[count, ...]` arrays in one block."""
    layout, offset = {}, 0
    for key, space in obs_space.items():
        dtype = np.dtype(space.dtype)
        shape = tuple(space.shape)
        offset = -(-offset // 64) * 64  # aligned
        layout[key] = (offset, shape, dtype)
        offset += count * int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return layout, offset


def _describe(env):
    if isinstance(env, functools.partial):
        return _describe(env.func)
    return getattr(env, "__qualname__", None) or type(env).__name__


def _pickle_factory(env, env_kwargs):
    if isinstance(env, str):
        from keras_dreamer.envs import make

        factory = functools.partial(make, env, **env_kwargs)
    elif callable(env):
        factory = functools.partial(env, **env_kwargs) if env_kwargs else env
    else:
        raise ValueError(
            "ProcessEnvs needs an env name for kd.envs.make or a callable that "
            f"returns an env, got {env!r}."
        )
    try:
        return pickle.dumps(factory)
    except Exception as error:
        raise ValueError(
            f"ProcessEnvs could not pickle the env factory {env!r} ({error}). Each "
            "env process builds its env from it, so it must be an env name, a "
            "top-level function or class, or a functools.partial of one (not a "
            "lambda, a local function or an env instance)."
        ) from None


def _watch_parent(parent_pid):
    """Ends this process soon after its parent is gone (SIGKILL, SIGTERM, ...)."""
    while True:
        time.sleep(PARENT_POLL)
        if os.getppid() != parent_pid:
            os._exit(1)


def _worker(conn, factory, index, parent_pid):
    """The loop of one env process: build the env, then answer commands."""
    # Ctrl-C reaches the whole process group; the parent decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    try:
        env = as_env(pickle.loads(factory)())
        spaces = (dict(env.obs_space), env.act_space)
    except Exception:
        conn.send(("error", _traceback()))
        return
    conn.send(("ok", spaces))
    block, views = None, {}
    try:
        for kind, payload in iter(conn.recv, None):
            if kind == "close":
                break
            if kind == "attach":
                block, views = _attach_block(payload, index)
                continue
            try:
                obs = env.reset(seed=payload) if kind == "reset" else env.step(payload)
                for key, view in views.items():
                    view[...] = obs[key]
                small = {k: v for k, v in obs.items() if k not in views}
            except Exception:
                conn.send(("error", _traceback()))
                return
            conn.send(("ok", small))
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        views = None
        if block is not None:
            block.close()
        try:
            env.close()
        except Exception:
            pass


def _attach_block(payload, index):
    """This env's `{key: array}` slots in the parent's shared-memory block."""
    name, layout = payload
    if name is None:
        return None, {}
    block = shared_memory.SharedMemory(name=name)
    views = {}
    for key, (offset, shape, dtype) in layout.items():
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        views[key] = np.ndarray(shape, dtype, block.buf, offset + index * size)
    return block, views


def _traceback():
    text = traceback.format_exc().rstrip()
    last = text.splitlines()[-1] if text else "unknown error"
    return f"{last}\nTraceback of the env process:\n{text}"
