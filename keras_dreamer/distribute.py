"""Data-parallel and multi-process training.

A run is data parallel when a `keras.distribution.DataParallel` is set before
the model is built: Keras then replicates every variable (weights, optimizer
and metric state, seed generators) on each device of the mesh, splits every
batch along its first axis over the devices, and the compiled train step
averages the gradients over the whole (global) batch, so the losses equal a
single-device run's up to float rounding.

- `make_distribution(spec)` builds one from a spec (`None`, `"data_parallel"`
  or a device count per process) and `set_distribution(spec)` makes it the
  global one; `scope(spec)` sets it for a `with` block.
- `initialize(...)` starts a multi-process run (`keras.distribution.initialize`,
  its arguments or the `KERAS_DISTRIBUTION_*` environment variables); then
  `process_index()`, `process_count()` and `is_chief()` tell the processes
  apart. Each process feeds its own share of the global batch
  (`local_batch_size`); process 0, the chief, writes the logdir.
- `local_values(values)` turns replicated arrays into one-device copies, so
  acting and reports run on one local device, in one process, without any
  cross-device or cross-process traffic.
- `broadcast_from_chief(tree)` sends host values from process 0 to every
  process (used to resume a multi-process run from the chief's checkpoint).

Support by backend (Keras 3.15):

- **JAX**: all of the above, on GPUs, TPUs or CPU devices (several CPU
  devices: `XLA_FLAGS=--xla_force_host_platform_device_count=N` set before
  JAX starts). Across processes on CPU, JAX 0.10 uses its Gloo collectives by
  default (`jax_cpu_collectives_implementation`), nothing to set.
- **TensorFlow**: one device only. Keras's TensorFlow trainer ignores
  `keras.distribution` (its TensorFlow `distribution_lib` is an unused DTensor
  prototype without `initialize`), and `fit` under
  `tf.distribute.MirroredStrategy` fails on the bool flags of the batch (see
  `unsupported_message`). Asking for more than one device or process there
  raises `DistributionError`; nothing silently falls back to one device.
- **PyTorch**: one device only, likewise: Keras's torch trainer ignores
  `keras.distribution`, and keras-dreamer does not wrap it in
  `torch.distributed` (DDP). The same `DistributionError` names JAX as the way.
"""

import contextlib
import os

import keras
import numpy as np

from keras_dreamer import backend

# The environment variables `keras.distribution.initialize` reads.
ENV_JOB_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"

DATA_PARALLEL = "data_parallel"


def unsupported_message():
    """Why this backend refuses several devices or processes: JAX is the way.

    Returns:
        One paragraph: the JAX backend is needed, and the running backend's
        reason (`keras_dreamer.backend.DISTRIBUTION_LIMITS`).

    Examples:
        >>> unsupported_message().startswith("Data-parallel and multi-process")
        True
    """
    return (
        "Data-parallel and multi-process training need the JAX backend "
        "(KERAS_BACKEND=jax or --backend jax). " + backend.DISTRIBUTION_LIMITS
    ).strip()


class DistributionError(ValueError):
    """A distribution setting that cannot run (names the setting and why).

    Examples:
        >>> try:
        ...     make_distribution("two")
        ... except DistributionError as error:
        ...     print(str(error)[:38])
        A distribution is None (one device), '
    """


# ------------------------------------------------------------------ processes


_initialized = {"done": False}


def requested_processes(num_processes=None):
    """The process count asked for by argument or `KERAS_DISTRIBUTION_NUM_PROCESSES`.

    Args:
        num_processes: an explicit count, or None to read the environment.

    Returns:
        An int (1 when nothing asks for more).

    Examples:
        >>> requested_processes(2)
        2
    """
    if num_processes is None:
        num_processes = os.environ.get(ENV_NUM_PROCESSES) or 1
    try:
        count = int(num_processes)
    except (TypeError, ValueError):
        raise DistributionError(
            f"The number of processes must be an int >= 1, got {num_processes!r} "
            f"(argument or {ENV_NUM_PROCESSES})."
        ) from None
    if count < 1:
        raise DistributionError(
            f"The number of processes must be an int >= 1, got {count}."
        )
    return count


def initialize(job_addresses=None, num_processes=None, process_id=None):
    """Starts a multi-process run, once, before any model is built.

    Calls `keras.distribution.initialize`, which takes its arguments from the
    `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES` and
    `KERAS_DISTRIBUTION_PROCESS_ID` environment variables when they are None.
    Does nothing for a single process (no count above 1 asked for) or when
    already initialised. On JAX this must run before any JAX computation.

    Args:
        job_addresses: the coordinator's `host:port` (process 0), or every
            process's address separated by commas (the first is used).
        num_processes: the number of processes of the run.
        process_id: this process's index, 0 to `num_processes - 1`.

    Returns:
        True if a multi-process run was initialised by this call.

    Raises:
        DistributionError: on TensorFlow or PyTorch (multi-process training
            needs JAX),
            or an address or process id is missing.

    Examples:
        >>> initialize(num_processes=1)  # one process: nothing to do
        False
    """
    count = requested_processes(num_processes)
    if count == 1 or _initialized["done"]:
        return False
    if not backend.SUPPORTS_DISTRIBUTION:
        raise DistributionError(unsupported_message())
    address = job_addresses or os.environ.get(ENV_JOB_ADDRESSES)
    index = process_id if process_id is not None else os.environ.get(ENV_PROCESS_ID)
    if not address or index is None:
        raise DistributionError(
            f"A run of {count} processes needs the coordinator's address "
            f"(job_addresses or {ENV_JOB_ADDRESSES}, e.g. '10.0.0.1:1234') and "
            f"this process's id (process_id or {ENV_PROCESS_ID}, 0..{count - 1})."
        )
    index = int(index)
    if not 0 <= index < count:
        raise DistributionError(
            f"process_id must be in 0..{count - 1} for {count} processes, got {index}."
        )
    if backend.distributed_initialized():
        _initialized["done"] = True
        return False
    try:
        keras.distribution.initialize(address, count, index)
    except RuntimeError as error:
        raise DistributionError(
            f"Could not start process {index} of {count} (coordinator "
            f"{address}): {error}. Initialise before anything runs on JAX."
        ) from error
    _initialized["done"] = True
    return True


def process_count():
    """The number of processes of the run (1 unless `initialize` started more).

    Examples:
        >>> process_count()
        1
    """
    return backend.process_count()


def process_index():
    """This process's index (0 for the chief, and in a single-process run).

    Examples:
        >>> process_index()
        0
    """
    return backend.process_index()


def is_chief():
    """True in process 0, the one that writes the logdir.

    Examples:
        >>> is_chief()
        True
    """
    return process_index() == 0


def local_device_count():
    """The devices this process has (GPUs or TPUs if any, else CPU devices).

    Examples:
        >>> local_device_count() >= 1
        True
    """
    return backend.local_device_count()


# -------------------------------------------------------------- distribution


def _check_spec(spec):
    if spec is None or spec == DATA_PARALLEL:
        return spec
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
        raise DistributionError(
            f"A distribution is None (one device), {DATA_PARALLEL!r} (every "
            "device of every process) or a number of devices per process "
            f"(an int >= 1); got {spec!r}."
        )
    return spec


def make_distribution(spec):
    """A `keras.distribution.DataParallel` for `spec`, or None for one device.

    Args:
        spec: None: one device, except in a multi-process run, which always
            trains data parallel over every device of every process;
            `"data_parallel"`: every device of every process; an int N: the
            first N devices of each process (N = 1 in a single process: one
            device, through the distributed code path).

    Returns:
        A `DataParallel` whose mesh lists each process's devices together
        (so each process's share of the batch lands on its own devices),
        with `auto_shard_dataset=False` (every process feeds its own data),
        or None.

    Raises:
        DistributionError: a bad spec, more devices than this process has, or
            more than one device or process on TensorFlow or PyTorch.

    Examples:
        >>> make_distribution(None) is None  # one process, one device
        True
    """
    spec = _check_spec(spec)
    processes = process_count()
    if spec is None and processes == 1:
        return None
    if not backend.SUPPORTS_DISTRIBUTION:
        if spec == 1:
            return None
        raise DistributionError(
            f"train.distribution={spec!r} asks for several devices. "
            + unsupported_message()
        )
    local = backend.local_device_count()
    per_process = local if spec in (None, DATA_PARALLEL) else spec
    if per_process > local:
        hint = ""
        if backend.on_cpu():
            hint = (
                " For several CPU devices set XLA_FLAGS="
                f"--xla_force_host_platform_device_count={per_process} before "
                "JAX starts."
            )
        raise DistributionError(
            f"train.distribution={spec!r} asks for {per_process} devices per "
            f"process, but this process has {local}: "
            f"{backend.local_device_names()}.{hint}"
        )
    names = backend.mesh_device_names(per_process)
    return keras.distribution.DataParallel(devices=names, auto_shard_dataset=False)


def set_distribution(spec):
    """Makes `make_distribution(spec)` Keras's global distribution.

    Call it before building the model: variables are laid out when they are
    created.

    Args:
        spec: see `make_distribution`.

    Returns:
        The distribution (None for one device).

    Examples:
        >>> set_distribution(None) is None
        True
    """
    distribution = make_distribution(spec)
    if backend.SUPPORTS_DISTRIBUTION:
        keras.distribution.set_distribution(distribution)
    return distribution


@contextlib.contextmanager
def scope(spec):
    """`with scope(spec):` build, compile and `fit` a model data parallel.

    Args:
        spec: see `make_distribution`.

    Yields:
        The distribution (None for one device).

    Examples:
        >>> with scope(None) as distribution:
        ...     print(distribution)
        None
    """
    distribution = make_distribution(spec)
    if distribution is None:
        yield None
        return
    with distribution.scope():
        yield distribution


def current():
    """The distribution Keras trains with now, or None.

    Examples:
        >>> current() is None
        True
    """
    if not backend.SUPPORTS_DISTRIBUTION:
        return None
    return keras.distribution.distribution()


def device_count(distribution=None):
    """The devices of `distribution`'s mesh (1 without a distribution).

    Args:
        distribution: a `keras.distribution.Distribution`, or None for the
            current one.

    Examples:
        >>> device_count()
        1
    """
    distribution = distribution or current()
    if distribution is None:
        return 1
    return int(distribution.device_mesh.devices.size)


def local_batch_size(global_batch_size, distribution=None):
    """This process's share of a global batch, checked.

    Args:
        global_batch_size: sequences per update over all processes (B).
        distribution: the distribution (None: the current one).

    Returns:
        `B / process_count()`.

    Raises:
        DistributionError: B does not divide over the processes and devices.

    Examples:
        >>> local_batch_size(16)
        16
    """
    distribution = distribution or current()
    processes = process_count()
    devices = device_count(distribution)
    if global_batch_size % devices:
        raise DistributionError(
            f"train.batch_size={global_batch_size} must be a multiple of the "
            f"{devices} devices it is split over ({processes} process(es) x "
            f"{devices // processes} device(s)); e.g. "
            f"{max(1, global_batch_size // devices) * devices}."
        )
    return global_batch_size // processes


def check_fit(model, batch_size=None):
    """Raises a `DistributionError` if `model.fit` cannot run as set up.

    Checks that a distribution is not set on TensorFlow or PyTorch (where Keras would
    quietly train on one device), that the model's variables were created
    under the current distribution (JAX), and that this process's batch
    divides over its devices.

    Args:
        model: the model about to be trained.
        batch_size: this process's batch size, if known.

    Examples:
        >>> import keras
        >>> check_fit(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), 4)
    """
    if not backend.SUPPORTS_DISTRIBUTION:
        if backend.distribution_set(model):
            raise DistributionError(unsupported_message())
        return
    distribution = current()
    if distribution is None:
        return
    devices = device_count(distribution)
    for variable in model.weights:
        placed = backend.value_device_count(variable.value)
        if placed != devices:
            raise DistributionError(
                f"The variable {variable.path!r} lives on {placed} device(s) but "
                f"the distribution spans {devices}: build the model after "
                "setting the distribution (kd.distribute.set_distribution or "
                "inside kd.distribute.scope), not before."
            )
        break
    local_devices = devices // process_count()
    if batch_size is not None and batch_size % local_devices:
        raise DistributionError(
            f"This process's batch of {batch_size} sequences does not divide "
            f"over its {local_devices} devices."
        )


# ------------------------------------------------------------- local values


def local_values(values):
    """One-device copies of (possibly replicated) variable values, for acting.

    A replicated value spans every device of the mesh (and, in a
    multi-process run, every process). Acting, reports and evaluation run on
    one device of this process instead: each replicated JAX array becomes
    its shard on this process's first device (`addressable_data(0)`), a
    single-device array, so the compiled function is local to the process
    and never waits for the others. Other values pass through unchanged. On
    TensorFlow the values are returned as they are.

    Args:
        values: a list of arrays.

    Returns:
        A list of arrays.

    Examples:
        >>> import numpy as np
        >>> local_values([np.zeros(2)])[0].tolist()
        [0.0, 0.0]
    """
    return backend.local_values(values)


def assign_local(variable, value):
    """Writes a value computed on one device back into `variable`.

    In a single process the value is laid out like the variable (on every
    device of a replicated one). In a multi-process run it is not written:
    only one process computed it, and a replicated variable must hold the
    same value in every process (the reports' seed-generator advance is
    what is skipped; the train step keeps its own).

    Args:
        variable: a Keras variable.
        value: its new value, from a function run on `local_values`.

    Examples:
        >>> import keras
        >>> variable = keras.Variable(0.0)
        >>> assign_local(variable, 1.0)
        >>> float(variable.value)
        1.0
    """
    backend.assign_local(variable, value)


def broadcast_from_chief(tree):
    """Process 0's values of a tree of numpy arrays, in every process.

    Every process must call it with a tree of the same structure, shapes and
    dtypes (numeric or bool). In a single process it returns the values
    unchanged (as numpy).

    Args:
        tree: a nested structure of numpy arrays or numbers.

    Returns:
        The same structure of numpy arrays, holding process 0's values.

    Examples:
        >>> broadcast_from_chief({"step": np.int64(8)})["step"].item()
        8
    """
    if process_count() == 1:
        return keras.tree.map_structure(np.asarray, tree)

    def to_wire(x):
        x = np.asarray(x)
        return x.astype(np.int32) if x.dtype == bool else x

    def from_wire(x, original):
        original = np.asarray(original)
        return np.asarray(x).astype(original.dtype)

    sent = keras.tree.map_structure(to_wire, tree)
    received = backend.broadcast_one_to_all(sent)
    return keras.tree.map_structure(from_wire, received, tree)


def state_variables(model):
    """Every variable of a model's training state, in a fixed order.

    The model's variables (weights, seed generators, metrics) and then its
    optimizer's, each once.

    Args:
        model: a built (and usually compiled) model.

    Returns:
        A list of variables.

    Examples:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> len(state_variables(model))
        2
    """
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        known = {id(v) for v in variables}
        variables += [v for v in optimizer.variables if id(v) not in known]
    return variables


@contextlib.contextmanager
def no_distribution():
    """Builds what is created inside on one device, whatever the distribution.

    For work one process does alone (the chief's checkpoints, its one-device
    copy of a model to restore into): on JAX, placing a new variable on a
    mesh that spans several processes needs every process, so a variable
    Keras creates there must not use the global distribution.

    Examples:
        >>> with no_distribution():
        ...     print(current())
        None
    """
    if not backend.SUPPORTS_DISTRIBUTION:
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def restore_checkpoint(path, model, restore):
    """Restores a checkpoint into `model`, or reads it for `sync_from_chief`.

    In a single process this is `restore(path, model)`. In a multi-process
    run only the chief reads the checkpoint, and it must not assign the
    replicated variables alone (on JAX, every process takes part in
    placing a value on the global mesh): it restores into a one-device copy
    of the model (`from_config`, same optimizer config) and returns that
    copy's state values, which `sync_from_chief` then sends to everyone.

    Args:
        path: the checkpoint directory.
        model: the compiled model (built under the distribution).
        restore: `restore(path, model)`, e.g. `keras_dreamer.checkpoint.restore`.

    Returns:
        None (single process: restored in place), or the list of numpy
        values of `state_variables` of the restored copy.

    Examples:
        >>> import tempfile
        >>> import keras
        >>> from keras_dreamer import checkpoint
        >>> def make():
        ...     model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        ...     model.compile(optimizer="sgd", loss="mse")
        ...     return model
        >>> path = checkpoint.save(tempfile.mkdtemp(), make(), step=3)
        >>> restore_checkpoint(path, make(), checkpoint.restore) is None
        True
    """
    if process_count() == 1:
        restore(path, model)
        return None
    optimizer = model.optimizer
    with no_distribution():
        copy = type(model).from_config(model.get_config())
        copy.compile(optimizer=type(optimizer).from_config(optimizer.get_config()))
        restore(path, copy)
        return [
            np.asarray(keras.ops.convert_to_numpy(v.value))
            for v in state_variables(copy)
        ]


def sync_from_chief(model, values=None):
    """Gives every process process 0's values of the model's training state.

    Every process calls it at the same point (a collective in a
    multi-process run): the chief passes the values `restore_checkpoint`
    read (or None to send its current ones), the others pass None; then
    every variable of `state_variables(model)` (weights, optimizer state,
    seed generators) holds the chief's value in every process. In a single
    process it assigns `values` if given.

    Args:
        model: a built, compiled model (the same in every process).
        values: numpy values in the order of `state_variables`, or None.

    Examples:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> sync_from_chief(model)
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = state_variables(model)
    if process_count() == 1:
        for variable, value in zip(variables, values or []):
            variable.assign(value)
        return
    if values is None or not is_chief():
        values = [
            np.asarray(keras.ops.convert_to_numpy(value))
            for value in local_values([v.value for v in variables])
        ]
    if len(values) != len(variables):
        raise DistributionError(
            f"The chief's state has {len(values)} variables, the model "
            f"{len(variables)}."
        )
    for variable, value in zip(variables, broadcast_from_chief(values)):
        variable.assign(value)


def describe(distribution=None):
    """A short description of how the run is laid out, for logs.

    Args:
        distribution: a `keras.distribution.Distribution`, or None for the
            current one.

    Examples:
        >>> describe()
        '1 process, 1 device'
    """
    processes = process_count()
    devices = device_count(distribution)
    return (
        f"{processes} process{'es' if processes > 1 else ''}, "
        f"{devices} device{'s' if devices > 1 else ''}"
    )


def gather(value):
    """Every process's value of a number, in process order.

    Every process must call it (a collective in a multi-process run).

    Args:
        value: a number (or 0-d array) of the same dtype in every process.

    Returns:
        A numpy array of shape `[process_count()]`.

    Examples:
        >>> gather(3).tolist()
        [3]
    """
    if process_count() == 1:
        return np.asarray([value])
    return np.asarray(backend.process_allgather(np.asarray(value)))


def process_seed(seed):
    """This process's seed for its envs, replay and policy noise.

    The chief (and a single-process run) keeps `seed`, so a one-process run
    is unchanged; process p > 0 gets an independent seed derived from
    `(seed, p)`. Model weights and model noise keep `seed` in every process
    (the replicated variables must agree).

    Args:
        seed: the run's int seed, or None.

    Returns:
        An int, or None when `seed` is None.

    Examples:
        >>> process_seed(7)
        7
    """
    index = process_index()
    if seed is None or index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
