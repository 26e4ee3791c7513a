"""Agg: modes, defaults, NaN skipping, regex rules and the memory cap."""

import threading

import numpy as np
import pytest

from keras_dreamer.logger import Agg

pytestmark = pytest.mark.backend_independent

NAN = float("nan")


@pytest.mark.parametrize(
    "mode, values, expected",
    [
        ("mean", [1.0, 2.0, 6.0], 3.0),
        ("avg", [1, 2], 1.5),
        ("sum", [1.0, 2.0, 6.0], 9.0),
        ("min", [3.0, -1.0, 2.0], -1.0),
        ("max", [3.0, -1.0, 2.0], 3.0),
        ("last", [3.0, -1.0, 2.0], 2.0),
        ("mean", [NAN, 1.0, NAN, 3.0], 2.0),
        ("sum", [NAN, 1.0, 3.0], 4.0),
        ("min", [NAN, 5.0, NAN, 4.0], 4.0),
        ("max", [NAN, 5.0, NAN, 4.0], 5.0),
        ("mean", [NAN, NAN], NAN),
        ("sum", [NAN], NAN),
        ("max", [NAN], NAN),
        ("mean", [np.float32(0.5), np.int64(1), True], 0.8333333333333334),
    ],
)
def test_scalar_modes(mode, values, expected):
    agg = Agg()
    for value in values:
        agg.add("x", value, agg=mode)
    result = agg.result()["x"]
    assert isinstance(result, float)
    np.testing.assert_equal(result, expected)


@pytest.mark.parametrize(
    "mode, values, expected",
    [
        ("mean", [[1.0, NAN], [3.0, 4.0]], [2.0, 4.0]),
        ("sum", [[1.0, NAN], [3.0, NAN]], [4.0, NAN]),
        ("min", [[1.0, 9.0], [3.0, NAN]], [1.0, 9.0]),
        ("max", [[1.0, 9.0], [3.0, NAN]], [3.0, 9.0]),
        ("stack", [[1, 2], [3, 4]], [[1, 2], [3, 4]]),
        ("concat", [[1, 2], [3]], [1, 2, 3]),
        ("concat", [1, 2], [1, 2]),
        ("last", [[1, 2], [3]], [3]),
    ],
)
def test_array_modes(mode, values, expected):
    agg = Agg()
    for value in values:
        agg.add("x", np.array(value), agg=mode)
    np.testing.assert_equal(agg.result()["x"], expected)


@pytest.mark.parametrize(
    "values, expected",
    [
        (["a", "b"], "b"),  # strings -> last
        ([1.0, 3.0], 2.0),  # scalars -> mean
        ([np.float32(1.0), NAN], 1.0),  # NaN-skipping mean
        ([np.ones(2), np.zeros(3)], [1, 1, 0, 0, 0]),  # arrays -> concat
    ],
)
def test_default_modes(values, expected):
    agg = Agg()
    for value in values:
        agg.add("x", value)
    np.testing.assert_equal(agg.result()["x"], expected)


def test_stack_and_concat_keep_dtype():
    agg = Agg()
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    agg.add("video", frames)
    agg.add("video", frames)
    agg.add("episode", frames[0], agg="stack")
    result = agg.result()
    assert result["video"].dtype == np.uint8 and result["video"].shape == (6, 4, 4, 3)
    assert result["episode"].shape == (1, 4, 4, 3)


def test_regex_rules_explicit_mode_and_prefix():
    agg = Agg(rules={r"^episode/": "sum", r"/max$": "max"})
    for value in (1.0, 2.0):
        agg.add({"episode/score": value, "loss/max": value, "loss": value})
        agg.add("loss/min", value, agg="min")
    assert agg.result(prefix="train") == {
        "train/episode/score": 3.0,
        "train/loss/max": 2.0,
        "train/loss": 1.5,
        "train/loss/min": 1.0,
    }


def test_rules_accept_pairs_and_first_match_wins():
    agg = Agg(rules=[("score", "max"), ("^episode/", "sum")])
    agg.add({"score": 1.0, "length": 2.0}, prefix="episode")
    agg.add({"score": 4.0, "length": 3.0}, prefix="episode")
    assert agg.result() == {"episode/score": 4.0, "episode/length": 5.0}


def test_result_resets_unless_asked():
    agg = Agg()
    agg.add("x", 1.0)
    assert agg.result(reset=False) == {"x": 1.0}
    agg.add("x", 3.0)
    assert agg.result() == {"x": 2.0}
    assert agg.result() == {}
    agg.add("x", "now text")
    agg.reset()
    assert agg.result() == {}


def test_the_mode_of_a_key_is_fixed_within_a_window():
    agg = Agg()
    agg.add("x", 1.0, agg="sum")
    agg.add("x", 2.0)  # agg=None keeps the key's mode
    with pytest.raises(ValueError, match="'x'.*'sum'.*'max'"):
        agg.add("x", 2.0, agg="max")
    assert agg.result() == {"x": 3.0}
    agg.add("x", 5.0, agg="max")  # a new window may choose again
    assert agg.result() == {"x": 5.0}


@pytest.mark.parametrize(
    "kwargs, first, second, match",
    [
        ({"agg": "mean"}, np.ones(2), np.ones(3), "'x'.*shape"),
        ({"agg": "stack"}, np.ones(2), np.ones(3), "'x'.*shape"),
        ({"agg": "concat"}, np.ones((2, 2)), np.ones((2, 3)), "'x'.*shape"),
        ({"agg": "mean"}, 1.0, "text", "'x'"),
        ({"agg": "sum"}, 1.0, object(), "'x'"),
    ],
)
def test_bad_values_name_the_key(kwargs, first, second, match):
    agg = Agg()
    agg.add("x", first, **kwargs)
    with pytest.raises(ValueError, match=match):
        agg.add("x", second, **kwargs)


def test_unknown_modes_are_rejected():
    with pytest.raises(ValueError, match="'median'"):
        Agg().add("x", 1.0, agg="median")
    with pytest.raises(ValueError, match="'median'.*rule"):
        Agg(rules={"x": "median"})


def test_memory_is_capped_per_key_and_warned_once():
    agg = Agg(max_bytes=100 * 8)
    with pytest.warns(RuntimeWarning, match="max_bytes") as record:
        for _ in range(30):
            agg.add("x", np.arange(8.0))  # concat: 64 bytes per add
            agg.add("s", np.arange(4.0), agg="stack")  # 32 bytes per add
    messages = [str(warning.message) for warning in record]
    assert [m.split("'")[1] for m in messages] == ["x", "s"]
    result = agg.result()
    # concat keeps the earliest rows that fit: 12 whole adds and 4 more rows.
    np.testing.assert_array_equal(result["x"][:8], np.arange(8.0))
    assert result["x"].shape == (100,)
    assert result["s"].shape == (25, 4)
    agg.add("x", np.arange(8.0))  # a new window starts empty
    assert agg.result()["x"].shape == (8,)


def test_a_value_larger_than_the_cap_leaves_an_empty_result():
    agg = Agg(max_bytes=16)
    with pytest.warns(RuntimeWarning):
        agg.add("video", np.zeros((2, 4, 4, 3), np.uint8))
        agg.add("frames", np.zeros((4, 4, 3), np.uint8), agg="stack")
    result = agg.result()
    assert result["video"].shape == (0, 4, 4, 3)
    assert result["frames"].shape == (0, 4, 4, 3)


def test_values_are_copied_on_add():
    agg = Agg()
    value = np.zeros(3)
    agg.add("x", value, agg="last")
    agg.add("y", value)
    value[:] = 1
    result = agg.result()
    np.testing.assert_array_equal(result["x"], 0)
    np.testing.assert_array_equal(result["y"], 0)


def test_adds_from_several_threads_are_all_counted():
    agg = Agg()

    def work():
        for _ in range(1000):
            agg.add({"n": 1.0, "items": np.ones(1)})
            agg.add("total", 1.0, agg="sum")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = agg.result()
    assert result["total"] == 4000.0 and result["n"] == 1.0
    assert result["items"].shape == (4000,)
