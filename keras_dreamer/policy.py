"""Acting with an agent: a stateful, compiled, batched policy for collectors."""

import threading

import numpy as np
from keras import ops

from keras_dreamer import backend
from keras_dreamer import fitting


class ActingWeights:
    """The weights an agent's policies act with.

    Outside `fit` (and on TensorFlow always) policies read the agent's
    variables. On JAX, `fit` holds the trained values outside the variables
    during an epoch; `Agent.fit` then calls `refresh()` after each step, right
    after Keras synced its state into the variables (a callback's
    `self.model`), and the policies use that snapshot, a copy of the acting
    weights (encoder, RSSM, actor). In a data-parallel run the snapshot holds
    one device's copy of the replicated weights, so acting runs on one local
    device in each process.

    Args:
        agent: the `kd.Agent`.

    Examples:
        >>> import keras_dreamer as kd
        >>> agent = kd.Agent({"obs": (4,)}, kd.Discrete(2), preset="debug")
        >>> weights = agent.acting_weights
        >>> weights.values() is None  # not inside fit: act with the variables
        True
        >>> len(weights.variables) > 0
        True
    """

    def __init__(self, agent):
        self._agent = agent
        self._snapshot = None
        self._lock = threading.Lock()
        self._steps = {}

    def step_function(self, mode):
        """The compiled `policy_step(carry, obs, mode, noise)`, one per mode,
        shared by every policy of the agent: `call(values, carry, obs, noise)`."""
        if mode not in self._steps:
            agent = self._agent
            self._steps[mode] = fitting.compile_with_values(
                self.variables,
                lambda carry, obs, noise: agent.policy_step(carry, obs, mode, noise),
            )
        return self._steps[mode]

    @property
    def variables(self):
        """The variables acting reads: the encoder's, the RSSM's, the actor's."""
        agent = self._agent
        wm = agent.world_model
        return [*wm.encoder.variables, *wm.rssm.variables, *agent.actor.variables]

    def begin(self):
        """`fit` starts: take the first snapshot (JAX)."""
        self.refresh()

    def refresh(self):
        """Snapshot the variables' current values (a no-op on TensorFlow)."""
        # Copies where `fit` detaches the values (JAX), taken from this
        # process's first device (acting runs there); None elsewhere.
        values = backend.acting_snapshot(self.variables)
        with self._lock:
            self._snapshot = values

    def end(self):
        """`fit` ended: act with the variables again."""
        with self._lock:
            self._snapshot = None

    def values(self):
        """The snapshot during `fit` on JAX, else None (read the variables)."""
        with self._lock:
            return self._snapshot


class AgentPolicy:
    """An agent's batched, stateful policy: `actions = policy(obs)`.

    Built by `agent.policy` (training) and `agent.make_policy(mode)`. Each
    call is one compiled `agent.policy_step` for N envs: the policy keeps the
    posterior state and last action of each env across calls and resets
    them where `obs["is_first"]`. The action and latent noise come from a
    numpy generator (`get_state`/`set_state` save and restore it). During
    `agent.fit` it acts with the weights of the latest train step on every
    backend.

    Args:
        agent: the `kd.Agent`.
        mode: "train" (sample) or "eval" (sample, or the mode when the agent
            was built with `eval_mode="mode"`).
        seed: seed of the noise, or None.

    Returns:
        Calling it returns float32 actions `[N, A]` in the env's format
        (one-hot for `Discrete`).

    Examples:
        >>> import numpy as np
        >>> import keras_dreamer as kd
        >>> agent = kd.Agent({"obs": (4,)}, kd.Discrete(2), preset="debug")
        >>> policy = agent.make_policy("eval", seed=0)
        >>> obs = {"obs": np.zeros((3, 4), "float32"), "is_first": np.ones(3, bool)}
        >>> policy(obs).sum(-1).tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(self, agent, mode="train", seed=None):
        if mode not in ("train", "eval"):
            raise ValueError(f"policy mode must be 'train' or 'eval', got {mode!r}.")
        self.agent = agent
        self.mode = mode
        self._rng = np.random.default_rng(seed)
        self._carry = None
        self._size = None

    @property
    def batch_size(self):
        """The number of envs the carry holds (None before the first call)."""
        return self._size

    def __call__(self, obs):
        """One action per env for the batched observations `obs`."""
        obs = self._check(obs)
        count = len(obs["is_first"])
        if self._carry is None:
            self._carry = self.agent.initial_policy_carry(count)
            self._size = count
        weights = self.agent.acting_weights
        step = weights.step_function(self.mode)
        carry, action = step(weights.values(), self._carry, obs, self._noise(count))
        self._carry = carry
        return np.asarray(ops.convert_to_numpy(action), np.float32)

    def extras(self):
        """Per-env values to store with the step just acted on: none yet, `{}`
        (see `kd.data.Driver`)."""
        return {}

    def reset(self):
        """Forget every env's state (the next call may have a new batch size)."""
        self._carry = None
        self._size = None

    def get_state(self):
        """The noise generator's state (a JSON-serialisable dict)."""
        return self._rng.bit_generator.state

    def set_state(self, state):
        """Restores a state from `get_state`, e.g. when resuming a run."""
        self._rng.bit_generator.state = state

    def _noise(self, count):
        actor, rssm = self.agent.actor, self.agent.world_model.rssm
        shape = actor.noise_shape((count,))
        action = (
            self._rng.uniform(size=shape)
            if actor.discrete
            else self._rng.standard_normal(size=shape)
        )
        latent = self._rng.uniform(size=(count, rssm.stoch, rssm.classes))
        return {
            "action": action.astype(np.float32),
            "latent": latent.astype(np.float32),
        }

    def _check(self, obs):
        spaces = self.agent.world_model.obs_spaces
        if not isinstance(obs, dict):
            raise ValueError(
                f"The policy takes a dict of batched observations, got {type(obs)}."
            )
        missing = [k for k in (*spaces, "is_first") if k not in obs]
        if missing:
            raise ValueError(
                f"The policy's observations lack {missing}; expected the keys "
                f"{sorted(spaces)} and 'is_first', got {sorted(obs)}."
            )
        arrays = {"is_first": np.asarray(obs["is_first"], bool)}
        if arrays["is_first"].ndim != 1:
            raise ValueError(
                f"The policy's 'is_first' must be a vector [N], got shape "
                f"{arrays['is_first'].shape}."
            )
        count = len(arrays["is_first"])
        for key, space in spaces.items():
            value = np.asarray(obs[key])
            if value.shape != (count, *space.shape):
                raise ValueError(
                    f"The policy's observation {key!r} has shape {value.shape}; "
                    f"expected {(count, *space.shape)} ({count} envs of {space})."
                )
            arrays[key] = value
        if self._size is not None and count != self._size:
            raise ValueError(
                f"The policy was called with {count} envs but its state holds "
                f"{self._size}; call reset() before changing the number of envs."
            )
        return arrays
