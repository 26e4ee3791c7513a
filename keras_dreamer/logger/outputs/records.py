"""TFRecord framing for event files, with a CRC-32C fast enough for videos.

An event file is a sequence of records: the payload length (uint64, little
endian), the masked CRC-32C of those 8 bytes (uint32), the payload, and the
masked CRC-32C of the payload. TensorBoard's TensorFlow-free fallback computes
CRC-32C in pure Python, about 5 MB/s while holding the GIL: a 3 MB video GIF
would keep the logging thread busy and slow training for most of a second.
`crc32c` here gives the same checksum with numpy in a few tens of ms.
"""

import functools
import struct

import numpy as np

_POLYNOMIAL = 0x82F63B78  # CRC-32C (Castagnoli), bit-reflected
_LANE_BYTES = 1024
_NUMPY_FROM_BYTES = 32 * 1024  # below this, the plain loop is faster


def _byte_table():
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ _POLYNOMIAL, table >> 1)
    return table.astype(np.uint32)


_TABLE = _byte_table()
_TABLE_LIST = _TABLE.tolist()


@functools.cache
def _zeros_tables():
    """Tables mapping a register to its value after `_LANE_BYTES` zero bytes.

    The map is linear over GF(2), so it splits into one 256-entry table per
    register byte, XORed together.
    """
    register = (
        np.arange(256, dtype=np.uint32)[None, :]
        << np.uint32(8) * np.arange(4, dtype=np.uint32)[:, None]
    )
    register = register.reshape(-1)
    for _ in range(_LANE_BYTES):
        register = _TABLE[register & 0xFF] ^ (register >> 8)
    return tuple(row.tolist() for row in register.reshape(4, 256))


def crc32c(data):
    """Returns the CRC-32C checksum of `data`.

    Large inputs are split into lanes of `_LANE_BYTES` bytes whose registers
    are updated together with numpy, then chained: since the CRC register is
    linear, the register of a whole is each lane's register, carried over the
    zero bytes that follow it. An initial register of all ones equals
    inverting the first four bytes, and leading zero bytes do not change a
    zero register, so the input is padded at the front to whole lanes.

    Args:
        data: bytes-like.

    Returns:
        The checksum as an int.

    Examples:
        >>> hex(crc32c(b"123456789"))
        '0xe3069283'
    """
    if len(data) < _NUMPY_FROM_BYTES:
        register = 0xFFFFFFFF
        for byte in bytes(data):
            register = _TABLE_LIST[(register ^ byte) & 0xFF] ^ (register >> 8)
        return register ^ 0xFFFFFFFF
    message = np.frombuffer(data, np.uint8).copy()
    message[:4] ^= 0xFF
    padding = np.zeros((-len(message)) % _LANE_BYTES, np.uint8)
    lanes = np.concatenate([padding, message]).reshape(-1, _LANE_BYTES)
    columns = np.ascontiguousarray(lanes.T).astype(np.uint32)
    registers = np.zeros(len(lanes), np.uint32)
    for column in columns:
        registers = _TABLE[(registers ^ column) & 0xFF] ^ (registers >> 8)
    t0, t1, t2, t3 = _zeros_tables()
    register = 0
    for lane_register in registers.tolist():
        register = (
            t0[register & 0xFF]
            ^ t1[(register >> 8) & 0xFF]
            ^ t2[(register >> 16) & 0xFF]
            ^ t3[register >> 24]
            ^ lane_register
        )
    return register ^ 0xFFFFFFFF


def masked_crc32c(data):
    """Returns the masked CRC-32C that TFRecord framing stores.

    Args:
        data: bytes-like.

    Returns:
        The masked checksum as an int.

    Examples:
        >>> masked_crc32c(b"")
        2726488792
    """
    register = crc32c(data)
    return (((register >> 15) | (register << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(payload):
    """Returns `payload` framed as one TFRecord.

    Args:
        payload: bytes, e.g. a serialized `Event` proto.

    Returns:
        The record bytes.

    Examples:
        >>> len(frame(b"abc"))
        19
    """
    header = struct.pack("<Q", len(payload))
    return b"".join(
        [
            header,
            struct.pack("<I", masked_crc32c(header)),
            payload,
            struct.pack("<I", masked_crc32c(payload)),
        ]
    )
