"""Checkpoints of a training run: atomic, resumable, never half-written.

Layout under `LOGDIR/ckpt/`:

```
ckpt/0000001000/model.weights.h5   model and optimizer variables
ckpt/0000001000/state.json         step, env steps, RNG states, extra state
ckpt/replay/                       the replay (saved incrementally)
```

A checkpoint directory is written under a temporary name (`.tmp-*`) and
renamed when complete, so the latest complete checkpoint is simply the
highest-numbered directory; older ones beyond `keep` are then removed.
"""

import json
import os
import shutil
import warnings

import keras
import numpy as np

from keras_dreamer import distribute

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.weights.h5"
REPLAY_DIR = "replay"


def checkpoint_dirs(directory):
    """Complete checkpoint directories in `directory`, oldest first.

    Args:
        directory: the checkpoint root (`LOGDIR/ckpt`); it may not exist.

    Returns:
        A list of paths (directories named by their zero-padded step that
        hold a `state.json`); half-written `.tmp-*` directories are skipped.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> for name in ("0000000500", "0000001000", ".tmp-0000001500-1"):
        ...     os.makedirs(os.path.join(root, name))
        ...     open(os.path.join(root, name, STATE_FILE), "w").close()
        >>> [os.path.basename(p) for p in checkpoint_dirs(root)]
        ['0000000500', '0000001000']
    """
    if not os.path.isdir(directory):
        return []
    names = [n for n in os.listdir(directory) if n.isdigit()]
    complete = [
        os.path.join(directory, n)
        for n in sorted(names, key=int)
        if os.path.exists(os.path.join(directory, n, STATE_FILE))
    ]
    return complete


def latest(directory):
    """The newest complete checkpoint directory, or None.

    Args:
        directory: the checkpoint root (`LOGDIR/ckpt`).

    Returns:
        The path of the highest-step complete checkpoint, or None.

    Examples:
        >>> import tempfile
        >>> latest(tempfile.mkdtemp()) is None
        True
    """
    dirs = checkpoint_dirs(directory)
    return dirs[-1] if dirs else None


def save(directory, model, step, state=None, replay=None, keep=2):
    """Writes a checkpoint of `model` at `step`.

    Args:
        directory: the checkpoint root (`LOGDIR/ckpt`).
        model: a compiled Keras model; its weights and optimizer variables are
            saved, plus the states of its seed generators.
        step: the global train step (names the checkpoint).
        state: JSON-serialisable extra state (env steps, RNG states, ...).
        replay: a `kd.data.Replay` to save under `directory/replay/`.
        keep: how many checkpoints to keep.

    Returns:
        The path of the new checkpoint directory.

    Examples:
        >>> import tempfile
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> root = tempfile.mkdtemp()
        >>> path = save(root, model, step=1000, state={"env_steps": 32000})
        >>> os.path.basename(path), sorted(os.listdir(path))
        ('0000001000', ['model.weights.h5', 'state.json'])
    """
    os.makedirs(directory, exist_ok=True)
    if replay is not None:
        replay.save(os.path.join(directory, REPLAY_DIR))
    final = os.path.join(directory, f"{int(step):010d}")
    temp = os.path.join(directory, f".tmp-{int(step):010d}-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    # Only the chief of a multi-process run saves: whatever Keras creates
    # while saving (it probes a throwaway optimizer) must stay off the
    # global mesh, where creating a variable needs every process.
    with distribute.no_distribution():
        model.save_weights(os.path.join(temp, WEIGHTS_FILE))
    payload = {
        "step": int(step),
        "seed_states": _seed_states(model),
        **(state or {}),
    }
    with open(os.path.join(temp, STATE_FILE), "w") as file:
        json.dump(payload, file)
        file.flush()
        os.fsync(file.fileno())
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(temp, final)
    for old in checkpoint_dirs(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for name in os.listdir(directory):
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    return final


def read_state(path):
    """The state dict of a checkpoint (with `step`), without loading weights.

    Args:
        path: a checkpoint directory (see `latest`).

    Returns:
        The dict saved in its `state.json`.

    Examples:
        >>> import json, tempfile
        >>> path = tempfile.mkdtemp()
        >>> with open(os.path.join(path, STATE_FILE), "w") as file:
        ...     json.dump({"step": 500, "env_steps": 16000}, file)
        >>> read_state(path)["step"]
        500
    """
    with open(os.path.join(path, STATE_FILE)) as file:
        return json.load(file)


def restore(path, model):
    """Loads a checkpoint written by `save` into `model` (built and compiled).

    Args:
        path: a checkpoint directory (e.g. `latest(LOGDIR/ckpt)`).
        model: a built and compiled model of the same architecture.

    Returns:
        The checkpoint's state dict (with `step`).

    Examples:
        >>> import tempfile
        >>> def make():
        ...     model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        ...     model.compile(optimizer="sgd", loss="mse")
        ...     return model
        >>> path = save(tempfile.mkdtemp(), make(), step=7, state={"env_steps": 3})
        >>> state = restore(path, make())
        >>> state["step"], state["env_steps"]
        (7, 3)
    """
    state = read_state(path)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(path, WEIGHTS_FILE))
    _restore_seed_states(model, state)
    return state


# Keras names the state variable of every `keras.random.SeedGenerator` so.
SEED_STATE_NAME = "seed_generator_state"


def seed_state_variables(model):
    """The state variables of `model`'s seed generators, in variable order.

    Keras's weight files leave seed-generator states out, so a checkpoint
    saves them beside the weights. They are found through public API: the
    model's `non_trainable_variables` whose `name` is the one Keras gives a
    `keras.random.SeedGenerator`'s state (`SEED_STATE_NAME`). A test checks
    that a `WorldModel`'s generators are found, so a rename in Keras fails
    loudly.

    Args:
        model: a built Keras model.

    Returns:
        A list of variables.

    Examples:
        >>> layer = keras.layers.Dropout(0.5, seed=1)
        >>> model = keras.Sequential([keras.Input((2,)), layer])
        >>> [v.name for v in seed_state_variables(model)]
        ['seed_generator_state']
    """
    return [v for v in model.non_trainable_variables if v.name == SEED_STATE_NAME]


def _seed_states(model):
    return [
        np.asarray(keras.ops.convert_to_numpy(variable)).tolist()
        for variable in seed_state_variables(model)
    ]


def _restore_seed_states(model, state):
    saved = state.get("seed_states")
    if saved is None:  # checkpoints written before 0.1.1 kept a dict
        saved = list(state.get("seed_generators", {}).values())
    variables = seed_state_variables(model)
    if saved and len(saved) != len(variables):
        warnings.warn(
            f"The checkpoint holds {len(saved)} seed-generator states, the model "
            f"has {len(variables)}; the model's seed generators are not restored.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    for variable, value in zip(variables, saved):
        variable.assign(np.asarray(value, variable.dtype))


class Checkpointer(keras.callbacks.Callback):
    """Saves a checkpoint every `save_every` steps (at epoch ends) and at the end.

    Args:
        directory: the checkpoint root (`LOGDIR/ckpt`).
        save_every: steps between checkpoints; checked at the end of each
            epoch, so choose epoch lengths that divide it.
        state_fn: callable returning the extra JSON state to save.
        replay: the replay to save with each checkpoint.
        keep: checkpoints to keep.

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> root = tempfile.mkdtemp()
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x, y = np.zeros((8, 2)), np.zeros((8, 1))
        >>> saver = Checkpointer(root, save_every=4)
        >>> _ = model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[saver])
        >>> [os.path.basename(p) for p in checkpoint_dirs(root)]
        ['0000000004', '0000000008']
    """

    def __init__(self, directory, save_every, state_fn=None, replay=None, keep=2):
        super().__init__()
        self.directory = directory
        self.save_every = save_every
        self.state_fn = state_fn or dict
        self.replay = replay
        self.keep = keep
        self.last_saved = None

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def save_now(self):
        step = self._step()
        if step != self.last_saved:
            save(
                self.directory,
                self.model,
                step,
                self.state_fn(),
                self.replay,
                self.keep,
            )
            self.last_saved = step

    def on_train_begin(self, logs=None):
        self.last_saved = self._step()

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            return  # stopped on purpose (e.g. a NaN loss): keep the last good one
        step = self._step()
        if (
            self.save_every
            and step // self.save_every > (self.last_saved or 0) // self.save_every
        ):
            self.save_now()

    def on_train_end(self, logs=None):
        if not self.model.stop_training:
            self.save_now()
