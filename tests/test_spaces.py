import numpy as np
import pytest

from keras_dreamer.spaces import Box
from keras_dreamer.spaces import Discrete
from keras_dreamer.spaces import as_act_space
from keras_dreamer.spaces import as_obs_space
from keras_dreamer.spaces import space_from_config

pytestmark = pytest.mark.backend_independent


def test_discrete_encodes_index_and_onehot():
    space = Discrete(3)
    np.testing.assert_array_equal(space.encode(1), [0, 1, 0])
    np.testing.assert_array_equal(space.encode(np.array([0, 0, 1.0])), [0, 0, 1])
    assert space.index(np.int64(2)) == 2
    assert space.width == 3


@pytest.mark.parametrize("bad", [3, -1, 1.5, [0, 1], [0.5, 0.5, 0], [1, 1, 0]])
def test_discrete_rejects_bad_actions(bad):
    with pytest.raises(ValueError, match="Discrete\\(3\\)"):
        Discrete(3).encode(bad)


def test_box_checks_shape_and_bounds():
    space = Box((2,), -1, 1)
    np.testing.assert_array_equal(space.encode([0.5, -1]), [0.5, -1])
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        space.encode([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="outside the bounds"):
        space.encode([2.0, 0.0])


def test_space_config_round_trip():
    for space in [Discrete(5), Box((64, 64, 3), 0, 255, "uint8"), Box((3,))]:
        assert space_from_config(space.get_config()) == space


def test_obs_space_from_shapes():
    assert as_obs_space((64, 64, 3)) == Box((64, 64, 3), 0, 255, "uint8")
    assert as_obs_space((5,)).dtype == np.float32
    assert as_act_space(4) == Discrete(4)
    with pytest.raises(ValueError, match="act_space must be kd.Discrete"):
        as_act_space("four")


@pytest.mark.parametrize(
    "shape, bad",
    [((64, "x", 3), "entry 1 is 'x'"), ((64, 0, 3), "entry 1 is 0"), ((2.5,), "2.5")],
)
def test_malformed_obs_shape_names_the_key_and_the_entry(shape, bad):
    with pytest.raises(
        ValueError, match=f"entry 'image' has a bad shape.*{bad}"
    ) as info:
        as_obs_space(shape, "image")
    assert "invalid literal" not in str(info.value)


def test_malformed_box_shape_names_the_entry():
    with pytest.raises(ValueError, match="bad entry 1: 'x'"):
        Box((64, "x", 3))
