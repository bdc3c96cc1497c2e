"""The default weights are the release's ``rgb_scratch`` checkpoint, tensor for tensor.

The release's ``.index`` files (tests/data/checkpoints/, copied from kinetics-i3d's
data/checkpoints) store each tensor's masked CRC32C of its bytes. We compute the CRC of
every tensor in the default checkpoint's data file (the bytes the model loads), check it
against the default index, and compare with the release's indexes: all 230 equal
``rgb_scratch``'s and none equals ``rgb_imagenet``'s.
"""

from __future__ import annotations

from conftest import DATA
from model import default_weights
from model.checkpoint_index import mask, read_index, tensor_crc


def release_index(name):
    return read_index((DATA / "checkpoints" / name / "model.ckpt.index").read_bytes())


def test_mask_matches_leveldb():
    # LevelDB's mask of crc32c("") (0) and a known value.
    assert mask(0) == 0xA282EAD8
    assert mask(0xFFFFFFFF) == (0xFFFFFFFF + 0xA282EAD8) & 0xFFFFFFFF


def test_default_weights_are_rgb_scratch():
    prefix = default_weights.default_checkpoint()
    ours = read_index(open(prefix + ".index", "rb").read())
    data = open(prefix + ".data-00000-of-00001", "rb").read()
    scratch, imagenet = release_index("rgb_scratch"), release_index("rgb_imagenet")
    assert len(ours) == len(scratch) == 230
    assert set(ours) == set(scratch)
    for name, entry in ours.items():
        assert tensor_crc(data, entry) == entry.crc32c, name  # the CRC is of these bytes
        release = scratch[name]
        assert (entry.dtype, entry.size, entry.crc32c) == (
            release.dtype, release.size, release.crc32c), name
    assert not any(ours[n].crc32c == imagenet[n].crc32c for n in ours)
