"""DeepMind Control Suite tasks, stepped for real (from state and from pixels)."""

import numpy as np
import pytest

import keras_dreamer as kd
from keras_dreamer.spaces import Box
from tests.helpers import require
from tests.helpers import run_python

pytestmark = pytest.mark.backend_independent

require("dm_control", reason="the dmc extra is not installed")


def step(env, action, times=1):
    for _ in range(times):
        obs = env.step(action)
    return obs


def test_walker_from_state_with_action_repeat():
    env = kd.envs.make("dmc:walker_walk", image=False, repeat=2, seed=0)
    assert env.obs_space == {
        "orientations": Box((14,), dtype="float32"),
        "height": Box((1,), dtype="float32"),
        "velocity": Box((9,), dtype="float32"),
    }
    assert env.act_space == Box((6,), -1, 1)
    obs = env.reset()
    assert obs["is_first"] and obs["height"].dtype == np.float32
    start, control = env.physics.data.time, env._env.control_timestep()
    obs = step(env, np.zeros(6, np.float32), times=3)
    # Each step is `repeat` control steps of the task.
    assert env.physics.data.time == pytest.approx(start + 3 * 2 * control)
    assert obs["reward"].dtype == np.float32 and not obs["is_last"]
    again = kd.envs.make("dmc:walker_walk", image=False, repeat=2, seed=0)
    np.testing.assert_array_equal(
        again.reset()["orientations"], env.reset(seed=0)["orientations"]
    )


def test_actions_are_rescaled_to_the_task_bounds():
    # Quadruped's actuators have bounds other than [-1, 1] (e.g. [-0.8, 0.8]).
    env = kd.envs.make("dmc:quadruped_walk", image=False, seed=0)
    spec = env._env.action_spec()
    assert not np.all(spec.maximum == 1.0)
    assert env.act_space == Box((12,), -1, 1)
    env.reset()
    for value, expected in (
        (-1.0, spec.minimum),
        (1.0, spec.maximum),
        (0.0, (spec.minimum + spec.maximum) / 2),
    ):
        env.step(np.full(12, value, np.float32))
        np.testing.assert_allclose(env.physics.data.ctrl, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="outside the bounds"):
        env.step(np.full(12, 1.5, np.float32))


# Rendering runs in a fresh process on JAX: Mesa's software OpenGL crashes a
# process that has loaded TensorFlow (the test process may have).
PIXELS = """
import numpy as np
import keras_dreamer as kd
from keras_dreamer.spaces import Box

env = kd.envs.make("dmc:cartpole_swingup", proprio=False, size=32, seed=0)
assert env.obs_space == {"image": Box((32, 32, 3), 0, 255, "uint8")}
assert env.camera == 0  # camera -1: the domain's default
obs = env.reset()
np.testing.assert_array_equal(obs["image"], env.physics.render(32, 32, camera_id=0))
assert obs["image"].std() > 0
for _ in range(3):
    moved = env.step([1.0])["image"]
assert not np.array_equal(moved, obs["image"])
other = kd.envs.make("dmc:cartpole_swingup", proprio=False, size=32, camera=1, seed=0)
assert not np.array_equal(other.reset()["image"], obs["image"])
both = kd.envs.make("dmc:walker_walk", size=(24, 32), seed=0)
assert sorted(both.obs_space) == ["height", "image", "orientations", "velocity"]
assert both.reset()["image"].shape == (24, 32, 3)
print("ok")
"""


def test_pixels_from_the_domain_camera():
    result = run_python(PIXELS, backend="jax", env={"MUJOCO_GL": "egl"})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


REFUSALS = """
import os
os.environ.pop("MUJOCO_GL", None)
import pytest
import keras_dreamer as kd

kd.envs.make("dmc:walker_walk", image=False)  # loads no OpenGL
assert os.environ["MUJOCO_GL"] == "disabled"
with pytest.raises(RuntimeError, match="without an OpenGL renderer"):
    kd.envs.make("dmc:walker_walk", image=True)
print("ok")
"""


def test_a_process_that_cannot_render_says_why():
    result = run_python(REFUSALS, backend="jax")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


TENSORFLOW = """
import pytest
import tensorflow
import keras_dreamer as kd

with pytest.raises(RuntimeError, match="process that has loaded TensorFlow"):
    kd.envs.make("dmc:walker_walk", image=True)
print("ok")
"""


def test_software_rendering_next_to_tensorflow_is_refused_not_crashed():
    require("tensorflow")
    result = run_python(TENSORFLOW, backend="jax", env={"MUJOCO_GL": "egl"})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_reference_names_and_cameras():
    cup = kd.envs.make("dmc:cup_catch", image=False)
    assert (cup.domain, cup.task) == ("ball_in_cup", "catch")
    assert kd.envs.make("dmc:quadruped_walk", image=False).camera == 2
    reacher = kd.envs.make("dmc:reacher_easy", image=False)
    assert sorted(reacher.obs_space) == ["position", "to_target", "velocity"]


def test_bad_names_and_options_get_one_line():
    with pytest.raises(ValueError, match="Unknown dm_control task 'nonexistent_task'"):
        kd.envs.make("dmc:nonexistent_task", image=False)
    with pytest.raises(ValueError, match="Did you mean 'walker_walk'"):
        kd.envs.make("dmc:walker_wlak", image=False)
    with pytest.raises(ValueError, match="image=True or proprio=True"):
        kd.envs.make("dmc:walker_walk", image=False, proprio=False)
    with pytest.raises(ValueError, match="Unknown env name 'dmc:'"):
        kd.envs.make("dmc:")


def test_a_missing_package_names_its_extra():
    from keras_dreamer.envs.base import require as require_package

    with pytest.raises(ModuleNotFoundError, match=r"keras-dreamer\[dmc\]") as info:
        require_package(
            "no_such_package_kd", "The test", hint='pip install "keras-dreamer[dmc]"'
        )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name, keys",
    [
        ("cartpole.gin", ["vector"]),
        ("dmc_proprio.gin", ["height", "orientations", "velocity"]),
        ("dmc_vision.gin", None),  # rendering is checked in a fresh process above
    ],
)
def test_packaged_env_configs_build_their_env(name, keys):
    import gin

    from keras_dreamer.cli import resolve_gin_file
    from keras_dreamer.train import job

    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([resolve_gin_file(name)], [])
        bindings = gin.get_bindings(job.make_env)
        if keys is None:
            assert bindings["image"] and not bindings["proprio"]
            assert bindings["size"] == 64 and bindings["repeat"] == 1
            return
        env = job.make_env(seed=0)
        assert sorted(env.obs_space) == keys
        assert env.reset()["is_first"]
        env.close()
    finally:
        gin.clear_config()
