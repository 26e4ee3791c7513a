"""The event-file framing: our CRC-32C against tensorboard's reference code."""

import os

import pytest

from keras_dreamer.logger.outputs import records
from tests.helpers import require

pytestmark = pytest.mark.backend_independent

reference = require("tensorboard.compat.tensorflow_stub.pywrap_tensorflow")


@pytest.mark.parametrize(
    "size", [0, 1, 3, 4, 5, 1000, 32 * 1024 - 1, 32 * 1024, 32 * 1024 + 1, 100_003]
)
def test_crc32c_matches_tensorboard(size):
    data = os.urandom(size)
    assert records.crc32c(data) == reference.crc32c(data)
    assert records.masked_crc32c(data) == reference.masked_crc32c(data)


def test_crc32c_check_value():
    assert records.crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert records.crc32c(b"\xff" * 40_000) == reference.crc32c(b"\xff" * 40_000)


def test_frames_read_back_with_tensorboard(tmp_path):
    path = tmp_path / "records"
    payloads = [b"", b"x", os.urandom(50_000)]
    path.write_bytes(b"".join(records.frame(p) for p in payloads))
    reader = reference.PyRecordReader_New(str(path))
    read = []
    for _ in payloads:
        reader.GetNext()
        read.append(reader.record())
    assert read == payloads
