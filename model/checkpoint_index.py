"""Read a TF name-based checkpoint's ``.index``: each tensor's dtype, shape, place in the
data file and CRC32C, without TensorFlow's reader (which does not expose the CRCs).

The index is a LevelDB-format table (TensorFlow's ``table`` library, uncompressed, as
``BundleWriter`` writes it): a 48-byte footer at the end names the index block, whose
entries name the data blocks; each block is prefix-compressed ``(shared, unshared,
value length, key suffix, value)`` entries followed by a restart array and a 5-byte
trailer (compression type, CRC). The entry with the empty key is the bundle header; every
other key is a tensor name whose value is a ``BundleEntryProto``. The proto's ``crc32c``
is the *masked* CRC32C (LevelDB's mask, :func:`mask`) of the tensor's bytes in the data
file, i.e. of the tensor's raw little-endian values: it depends on the values and the
dtype only, not on the shape, so two checkpoints hold the same tensor exactly when these
agree (and the dtypes and element counts do).
"""

from __future__ import annotations

import dataclasses
import struct

FOOTER_SIZE = 48
MAGIC = 0xDB4775248B80FB57
BLOCK_TRAILER = 5


@dataclasses.dataclass(frozen=True)
class IndexEntry:
    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored


def mask(crc: int) -> int:
    """LevelDB's CRC mask, as TensorFlow stores the CRCs of tensors."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    if data[offset + size] != 0:
        raise ValueError("compressed checkpoint index blocks are not supported")
    block = data[offset:offset + size]
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + length]))
        pos += length
    return entries


def read_index(data: bytes) -> dict[str, IndexEntry]:
    """The tensors of a checkpoint ``.index`` (its bytes), by name."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (bad table magic)")
    pos = 0
    _, pos = _varint(footer, pos)  # metaindex handle: offset, size
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    out = {}
    for _, handle in _block(data, index_offset, index_size):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, value in _block(data, offset, size):
            if not key:
                continue  # the bundle header
            entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            name = key.decode("utf-8")
            out[name] = IndexEntry(
                name, entry.dtype, tuple(d.size for d in entry.shape.dim), entry.shard_id,
                entry.offset, entry.size, entry.crc32c)
    return out


def tensor_crc(data_file: bytes, entry: IndexEntry) -> int:
    """The masked CRC32C of one tensor's bytes in a data file (as the index stores it)."""
    import google_crc32c

    return mask(google_crc32c.value(data_file[entry.offset:entry.offset + entry.size]))
