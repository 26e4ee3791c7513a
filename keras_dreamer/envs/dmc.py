"""DeepMind Control Suite adapter (needs the `dmc` extra: `dm_control`)."""

import difflib
import os
import sys

import numpy as np

from keras_dreamer.batch import STEP_KEYS
from keras_dreamer.envs.base import Env
from keras_dreamer.envs.base import image_box
from keras_dreamer.envs.base import image_size
from keras_dreamer.envs.base import require
from keras_dreamer.spaces import Box

DMC_HINT = 'pip install "keras-dreamer[dmc]"'
# The reference DreamerV3's camera for camera=-1: a per-domain default.
DEFAULT_CAMERAS = {"quadruped": 2}
# Short names the reference uses for domains whose name holds an underscore.
DOMAIN_ALIASES = {"cup": "ball_in_cup"}


def load_suite(render=True):
    """Import `dm_control.suite`, with a headless renderer when one is needed.

    MuJoCo picks its OpenGL backend once, when `dm_control` is first
    imported, from `MUJOCO_GL`; unset, it would try GLFW, which needs a
    display. When `MUJOCO_GL` is unset this sets it first: to `egl` (as the
    reference DreamerV3 does, on Linux) when `render` is True, else to
    `disabled`, so that an env from state loads no OpenGL at all.

    Args:
        render: whether the caller renders images.

    Returns:
        The `dm_control.suite` module.

    Raises:
        ModuleNotFoundError: `dm_control` is not installed.
        ImportError: the chosen OpenGL backend cannot be loaded (the message
            names `MUJOCO_GL` and the system packages it needs).
        RuntimeError: `render` with Mesa's software OpenGL in a process that
            has loaded TensorFlow (see `check_renderer`).

    Examples:
        >>> suite = load_suite(render=False)
        >>> ("walker", "walk") in suite.ALL_TASKS
        True
    """
    if "MUJOCO_GL" not in os.environ:
        if not render:
            os.environ["MUJOCO_GL"] = "disabled"
        elif sys.platform.startswith("linux"):
            os.environ["MUJOCO_GL"] = "egl"
    backend = os.environ.get("MUJOCO_GL")
    software = backend == "osmesa" or (
        backend == "egl" and not os.path.exists("/dev/nvidiactl")
    )
    if render and software and "tensorflow" in sys.modules:
        if "dm_control" not in sys.modules:  # even loading it would crash at exit
            raise RuntimeError(_TENSORFLOW_CLASH.format(backend=backend))
    try:
        suite = require("dm_control.suite", "The dm_control env", hint=DMC_HINT)
    except ModuleNotFoundError:
        raise
    except Exception as err:  # the GL backend failed to load
        backend = os.environ.get("MUJOCO_GL")
        raise ImportError(
            f"dm_control could not load its OpenGL backend MUJOCO_GL={backend!r} "
            f"({type(err).__name__}: {err}). On Debian/Ubuntu install "
            "libegl1 and libgl1-mesa-dri for MUJOCO_GL=egl, or libosmesa6 "
            "for MUJOCO_GL=osmesa."
        ) from err
    return suite


def check_renderer():
    """Fail with one clear line where rendering would fail or crash.

    Two cases: `dm_control` was imported without a renderer (`MUJOCO_GL`
    `disabled`, e.g. because the first env of the process was built from
    state only), and Mesa's software OpenGL (`egl` without a GPU, or
    `osmesa`) in a process that has loaded TensorFlow: both carry their own
    LLVM, and MuJoCo's rendering then crashes the process.

    Raises:
        RuntimeError: in those two cases.

    Examples:
        >>> try:  # passes where this process can render, else says why not
        ...     check_renderer()
        ... except RuntimeError as error:
        ...     reason = str(error)
    """
    from dm_control import _render

    backend = _render.BACKEND
    if backend in (None, "off"):
        raise RuntimeError(
            "dm_control was imported without an OpenGL renderer "
            f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}; keras-dreamer sets "
            "'disabled' when the first DMC env of a process has image=False), "
            "so DMC(image=True) cannot render; set MUJOCO_GL=egl or osmesa "
            "before the first DMC env."
        )
    if "tensorflow" in sys.modules and _software_gl(backend):
        raise RuntimeError(_TENSORFLOW_CLASH.format(backend=backend))


_TENSORFLOW_CLASH = (
    "DMC(image=True) renders with Mesa's software OpenGL (MUJOCO_GL={backend}), "
    "which crashes a process that has loaded TensorFlow (Keras loads it when "
    "installed, e.g. in keras.utils.set_random_seed); render from pixels where "
    "TensorFlow is not installed (the JAX backend), or on a GPU's EGL."
)


def _software_gl(backend):
    if backend == "osmesa":
        return True
    if backend != "egl":
        return False
    try:
        from dm_control._render.pyopengl import egl_renderer
        from OpenGL import EGL

        vendor = EGL.eglQueryString(egl_renderer.EGL_DISPLAY, EGL.EGL_VENDOR)
    except Exception:  # cannot tell: assume the common CPU case
        return True
    return b"Mesa" in (vendor or b"Mesa")


def split_task(suite, name):
    """`(domain, task)` of a task name such as `"walker_walk"`.

    Args:
        suite: the `dm_control.suite` module.
        name: `"<domain>_<task>"`; `cup` stands for `ball_in_cup`.

    Returns:
        The pair, one of `suite.ALL_TASKS`.

    Raises:
        ValueError: no such task; the message suggests close names.

    Examples:
        >>> split_task(load_suite(), "cup_catch")
        ('ball_in_cup', 'catch')
    """
    names = {}
    for domain, task in suite.ALL_TASKS:
        names[f"{domain}_{task}"] = (domain, task)
        for alias, full in DOMAIN_ALIASES.items():
            if full == domain:
                names[f"{alias}_{task}"] = (domain, task)
    if name in names:
        return names[name]
    close = difflib.get_close_matches(str(name), sorted(names), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"Unknown dm_control task {name!r}: expected '<domain>_<task>' of "
        f"dm_control.suite.ALL_TASKS, e.g. 'walker_walk', 'cartpole_swingup', "
        f"'reacher_easy' or 'cup_catch'.{hint}"
    )


class DMC(Env):
    """A DeepMind Control Suite task, from its state and/or from pixels.

    Settings follow the reference DreamerV3's `dmc` env: 64x64 images,
    action repeat 1, camera -1 (the domain's default: 2 for quadruped, else
    0), proprioception and image both on.

    - Observation: with `proprio=True` one float32 vector key per entry of
      the task's observation (e.g. walker: `orientations` (14,), `height`
      (1,), `velocity` (9,); scalars become shape (1,)); with `image=True`
      `image_key`: uint8 (height, width, 3) rendered by MuJoCo from
      `camera`. With `image=False` nothing is rendered (the reference
      renders a `log/image` video then; here the obs has none).
    - Actions: `Box(shape, -1, 1)`, mapped linearly to the task's bounds.
    - Each `step` repeats the action `repeat` times (each is one control
      step of the task, itself several physics steps) and sums the rewards.
    - Episode end: the suite's time limit (1000 control steps) truncates;
      a discount of 0 (no suite task has one) is terminal.

    Rendering needs MuJoCo's headless OpenGL: `MUJOCO_GL=egl` (set by
    default on Linux) or `osmesa` (see `load_suite`); with Mesa's software
    OpenGL (no GPU) not in a process that has loaded TensorFlow (see
    `check_renderer`). An env with `image=False` loads no OpenGL.

    Args:
        task: `"<domain>_<task>"` (e.g. `"walker_walk"`; `"cup_catch"` is
            `ball_in_cup`'s `catch`).
        size: image size, an int or `(height, width)`.
        repeat: control steps per `step` call (action repeat).
        image: render the image observation.
        proprio: give the task's own observations.
        camera: MuJoCo camera id, or -1 for the domain's default.
        image_key: name of the image in the obs dict.
        seed: int seed of the task's randomness, or None.

    Raises:
        ValueError: an unknown task, bad options, or neither `image` nor
            `proprio`.
        ModuleNotFoundError: `dm_control` is not installed.
        RuntimeError: `image=True` where this process cannot render (see
            `check_renderer`).

    Examples:
        >>> env = DMC("walker_walk", image=False, seed=0)
        >>> sorted(env.obs_space), env.act_space
        (['height', 'orientations', 'velocity'], Box((6,), -1.0, 1.0, float32))
        >>> env.reset()["height"].dtype
        dtype('float32')
    """

    def __init__(
        self,
        task,
        size=64,
        repeat=1,
        image=True,
        proprio=True,
        camera=-1,
        image_key="image",
        seed=None,
    ):
        self._suite = load_suite(render=bool(image))
        self.domain, self.task = split_task(self._suite, task)
        if not (image or proprio):
            raise ValueError(
                f"DMC({task!r}) needs image=True or proprio=True (or both)."
            )
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"DMC(repeat=...) must be an int >= 1, got {repeat!r}.")
        if not isinstance(camera, int):
            raise ValueError(f"DMC(camera=...) must be an int, got {camera!r}.")
        self._height, self._width = image_size(size)
        if image:
            check_renderer()
        self.repeat = repeat
        self.image = bool(image)
        self.proprio = bool(proprio)
        self.camera = DEFAULT_CAMERAS.get(self.domain, 0) if camera == -1 else camera
        self.image_key = image_key
        self._env = self._load(seed)
        spec = self._env.action_spec()
        self._low = np.asarray(spec.minimum, np.float32)
        self._high = np.asarray(spec.maximum, np.float32)
        self.act_space = Box(spec.shape, -1.0, 1.0, "float32")
        self._keys = {}  # obs key -> name in the task's observation
        if self.proprio:
            for name, entry in self._env.observation_spec().items():
                key = name.replace("/", "_")
                if key in STEP_KEYS or key.startswith("is_"):
                    key = "obs_" + key
                if int(np.prod(entry.shape)) > 0:
                    self._keys[key] = name
        self.obs_space = {
            key: _float_box(self._env.observation_spec()[name].shape)
            for key, name in self._keys.items()
        }
        if self.image:
            if image_key in self.obs_space:
                raise ValueError(
                    f"DMC({task!r}) already has an observation {image_key!r}; "
                    "pass another image_key."
                )
            self.obs_space[image_key] = image_box(self._height, self._width, 3)

    @property
    def physics(self):
        """The task's MuJoCo physics (`dm_control.mujoco.Physics`)."""
        return self._env.physics

    def close(self):
        """Close the dm_control env."""
        self._env.close()

    def _load(self, seed):
        kwargs = {} if seed is None else {"random": int(seed)}
        return self._suite.load(self.domain, self.task, task_kwargs=kwargs)

    def _reset(self, seed):
        if seed is not None:
            self._env.close()
            self._env = self._load(seed)  # the task draws from its own RNG
        return self._observe(self._env.reset())

    def _step(self, action):
        native = self._low + (action + 1.0) / 2.0 * (self._high - self._low)
        reward = 0.0
        for _ in range(self.repeat):
            time_step = self._env.step(native)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        terminal = time_step.last() and time_step.discount == 0
        return self._observe(time_step), reward, terminal, time_step.last()

    def _observe(self, time_step):
        obs = {
            key: np.asarray(time_step.observation[name], np.float32).reshape(-1)
            for key, name in self._keys.items()
        }
        if self.image:
            check_renderer()  # TensorFlow may have been loaded since
            obs[self.image_key] = self._env.physics.render(
                self._height, self._width, camera_id=self.camera
            )
        return obs


def _float_box(shape):
    return Box((max(1, int(np.prod(shape))),), -np.inf, np.inf, "float32")
