"""The XLA compiler options of keras-dreamer's JAX programs
(`keras_dreamer.backend.jax_compiler`, through `backend.compiler_options`).

On a JAX CPU, convolutions compile to XLA's own kernels rather than YNNPACK
fusions, in the programs keras-dreamer jits itself and in the train step
Keras compiles (read back from XLA's dump of the optimized program in a
fresh process); `KERAS_DREAMER_XLA_OPTIONS=off` and a user's own `XLA_FLAGS`
keep XLA's defaults; a bad value is a clear error. The one private Keras
name the options reach the trainer through is checked here. The earlier
names, `kd.xla_options.*`, still work.
"""

import glob

import keras
import numpy as np
import pytest

from keras_dreamer import backend
from keras_dreamer import xla_options
from tests.helpers import run_python

BACKEND = keras.backend.backend()
jax_only = pytest.mark.skipif(BACKEND != "jax", reason="XLA options are JAX's")
YNN = '"kind":"__ynn_fusion"'


def conv(x, kernel):
    import jax

    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def compiled_text(jitted):
    # Big enough for XLA to give it to YNNPACK by default.
    x = np.ones((4, 8, 8, 32), "float32")
    kernel = np.ones((3, 3, 32, 32), "float32")
    return jitted.lower(x, kernel).compile().as_text()


def test_a_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("KERAS_DREAMER_XLA_OPTIONS", "fast")
    with pytest.raises(ValueError, match="KERAS_DREAMER_XLA_OPTIONS='fast'.*auto, off"):
        backend.compiler_options()


def test_the_earlier_names_still_work():
    assert xla_options.jax_compiler_options is backend.compiler_options
    assert xla_options.keras_jit_options is backend.keras_compiler_options
    assert xla_options.OPTIONS_ENV == "KERAS_DREAMER_XLA_OPTIONS"


def test_off_keeps_the_defaults(monkeypatch):
    monkeypatch.setenv("KERAS_DREAMER_XLA_OPTIONS", "off")
    assert backend.compiler_options() is None


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow path")
def test_tensorflow_has_no_options():
    assert backend.compiler_options() is None
    with backend.keras_compiler_options():
        pass


@jax_only
def test_a_users_xla_flags_win(monkeypatch):
    monkeypatch.setenv(
        "XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    )
    assert backend.compiler_options() is None


@jax_only
def test_on_a_jax_cpu_convolutions_leave_ynnpack(monkeypatch):
    import jax

    monkeypatch.delenv("KERAS_DREAMER_XLA_OPTIONS", raising=False)
    assert jax.default_backend() == "cpu"
    assert backend.compiler_options() == {
        "xla_cpu_experimental_ynn_fusion_type": (
            "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
        )
    }
    # If XLA stops giving convolutions to YNNPACK by default, this fails:
    # the options would then be moot and should be measured again.
    assert YNN in compiled_text(jax.jit(conv)), "XLA's default changed"
    from keras_dreamer.backend.jax_compiler import jit

    ours = compiled_text(jit(conv))
    assert YNN not in ours and "convolution(" in ours
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 32)).astype("float32")
    kernel = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype("float32")
    np.testing.assert_allclose(
        jit(conv)(x, kernel), jax.jit(conv)(x, kernel), rtol=1e-5, atol=1e-4
    )


@jax_only
def test_the_private_keras_name_the_options_go_through():
    import jax
    from keras.src.backend.jax import trainer

    assert trainer.jit is jax.jit, (
        "keras.src.backend.jax.trainer.jit is no longer jax.jit: "
        "keras_dreamer.backend.jax_compiler.keras_jit_options must follow "
        "Keras's trainer"
    )
    with backend.keras_compiler_options():
        assert trainer.jit.keywords == {"compiler_options": backend.compiler_options()}
    assert trainer.jit is jax.jit


# Trains a tiny world model with the options and without, in a process that
# dumps XLA's optimized programs; prints the two train steps' dump files.
SCRIPT = r"""
import glob, os, sys
import keras
import keras_dreamer as kd
from tests.helpers import Batches, moving_square_batch

batch = moving_square_batch(batch=2, length=8)
for mode in ("auto", "off"):
    os.environ["KERAS_DREAMER_XLA_OPTIONS"] = mode
    model = kd.WorldModel({"image": (16, 16, 3)}, kd.Discrete(3), preset="debug",
                          depth=32, mults=(1,))
    model.compile()
    model.fit(Batches([batch], 1), epochs=1, steps_per_epoch=1, verbose=0)
    dumped = os.path.join(sys.argv[1], "*jit_train_step*after_optimizations.txt")
    print(mode, sorted(glob.glob(dumped), key=os.path.getmtime)[-1])
"""


@jax_only
def test_the_train_step_keras_compiles_takes_the_options(tmp_path):
    result = run_python(
        SCRIPT,
        tmp_path,
        backend="jax",
        env={"XLA_FLAGS": f"--xla_dump_to={tmp_path}"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dumps = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    dumped = tmp_path / "*jit_train_step*after_optimizations.txt"
    assert len(glob.glob(str(dumped))) == 2
    texts = {}
    for mode, path in dumps.items():
        with open(path) as file:
            texts[mode] = file.read()
    assert texts["auto"].count("convolution(") > 0
    ynn_convolutions = {
        mode: sum(
            1
            for line in text.splitlines()
            if YNN in line and "conv_general_dilated" in line
        )
        for mode, text in texts.items()
    }
    assert ynn_convolutions["auto"] == 0 and ynn_convolutions["off"] > 0, (
        ynn_convolutions
    )
