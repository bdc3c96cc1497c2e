"""Row identities and keys (beam_i3d.job.row_keys), on manifest bytes directly: no Beam."""

from __future__ import annotations

from beam_i3d.errors import ManifestError
from beam_i3d.job.manifest import ManifestOptions
from beam_i3d.job.row_keys import bad_row_identity, content_identity, keyed_rows


def test_a_blank_clip_id_does_not_name_a_bad_row():
    # A clip_id of only spaces is no identity: the row is identified by its content.
    blank = {"clip_id": "   ", "video_uri": ""}
    assert bad_row_identity(blank) == content_identity(blank)
    assert bad_row_identity({"clip_id": "", "video_uri": ""}).startswith("manifest-row:")
    assert bad_row_identity({"video_uri": ""}) == content_identity({"video_uri": ""})
    assert bad_row_identity({"clip_id": " c7 ", "video_uri": ""}) == "c7"
    assert bad_row_identity({"clip_id": 12, "video_uri": ""}) == "12"


def test_keyed_rows_carry_their_source_and_order():
    data = (b"clip_id,video_uri,start_sec,end_sec\n"
            b"a,/v/a.mp4,1,2\n"
            b"b,/v/b.mp4,3,1\n")
    good, bad = keyed_rows("gs://b/m.csv", data, ManifestOptions())
    assert (good.identity, good.order, good.source) == ("a", ("gs://b/m.csv", 2),
                                                        "gs://b/m.csv:2")
    assert good.error is None and good.row is None
    # The request remembers its place too: the FVD selection picks clips by it.
    assert (good.request.source, good.request.order) == ("gs://b/m.csv:2", ("gs://b/m.csv", 2))
    assert (good.request.clip_id, good.request.start_sec, good.request.end_sec) == ("a", 1.0, 2.0)
    assert (bad.identity, bad.order, bad.source) == ("b", ("gs://b/m.csv", 3), "gs://b/m.csv:3")
    assert bad.request is None
    assert bad.row == {"clip_id": "b", "video_uri": "/v/b.mp4", "start_sec": "3", "end_sec": "1"}
    assert isinstance(bad.error, ManifestError)
    assert str(bad.error) == "gs://b/m.csv:3: end time 1.0 is not after start time 3.0"
