"""Untrusted input: every kind of bad file gives its typed error, naming the URI and cause."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np
import pytest

from beam_i3d import errors
from beam_i3d.media import video
from beam_i3d.media import video_open
from beam_i3d.media.preprocess import preprocess_clip
from beam_i3d.media.recipe import DecodeLimits
from video_factory import code_frame, write_video


def expect(error_type, uri, *args, **kwargs):
    """Decoding ``uri`` raises exactly ``error_type`` (a VideoError) naming ``uri``."""
    with pytest.raises(errors.VideoError) as info:
        preprocess_clip(uri, *args, **kwargs)
    assert type(info.value) is error_type, f"{type(info.value).__name__}: {info.value}"
    assert info.value.uri == uri and str(info.value).startswith(f"{uri}: ")
    assert info.value.cause
    return info.value


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return {
        "mp4": write_video(str(root / "good.mp4"), lambda i: code_frame(i, 160, 120), num_frames=50),
        "faststart": write_video(str(root / "faststart.mp4"), lambda i: code_frame(i, 160, 120),
                                 num_frames=50, container_options={"movflags": "faststart"}),
        "mkv": write_video(str(root / "good.mkv"), lambda i: code_frame(i, 160, 120), num_frames=50),
    }


def test_missing_file(tmp_path):
    expect(errors.VideoNotFound, str(tmp_path / "nope.mp4"))
    expect(errors.VideoNotFound, "file://" + str(tmp_path / "nope.mp4"))
    expect(errors.VideoNotFound, str(tmp_path))  # a directory
    expect(errors.VideoNotFound, "file:" + str(tmp_path / "nope.mp4"))


def test_error_before_opening_is_decode_clips_own(tmp_path, good):
    """What a parent may find with a stat, without opening the file, is exactly the
    error decoding raises; the rest (a directory, remote URIs, a range decode_clip
    refuses first) is left to decoding."""
    for uri in (str(tmp_path / "nope.mp4"), "file://" + str(tmp_path / "nope.mp4"),
                "file:" + str(tmp_path / "nope.mp4")):
        found = video.error_before_opening(uri, 1.0, 2.0, 10.0)
        raised = expect(errors.VideoNotFound, uri, 1.0, 2.0)
        assert (type(found), found.uri, found.cause, str(found)) == (
            type(raised), raised.uri, raised.cause, str(raised))
    for uri in (good["mp4"], str(tmp_path), "gs://bucket/nope.mp4", "http://127.0.0.1:9/a.mp4"):
        assert video.error_before_opening(uri, None, None, 10.0) is None, uri
    nope = str(tmp_path / "nope.mp4")
    assert video.error_before_opening(nope, 2.0, 1.0, 10.0) is None
    expect(errors.EmptyClip, nope, 2.0, 1.0)


@pytest.mark.parametrize("uri", [
    "http://127.0.0.1:9/clip.mp4", "https://127.0.0.1:9/clip.mp4", "ftp://127.0.0.1/clip.mp4",
    "HTTP://127.0.0.1:9/clip.mp4", "nosuchscheme://bucket/clip.mp4",
])
def test_uri_schemes_we_do_not_read(uri):
    cause = expect(errors.UnsupportedURI, uri).cause
    scheme = uri.split(":", 1)[0].lower()
    assert cause.startswith(f"cannot read {scheme}:// URIs; beam-i3d reads local paths, file://, gs://")
    assert "pip install" not in cause


def test_file_uri_forms(good):
    path = good["mp4"]
    expected = preprocess_clip(path).rgb
    for uri in ("file://" + path, "file:" + path, "file://localhost" + path, "FILE://" + path):
        np.testing.assert_array_equal(preprocess_clip(uri).rgb, expected)


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert "empty" in expect(errors.NotAVideo, str(path)).cause


@pytest.mark.parametrize("name,content", [
    ("notes.mp4", b"these are not the frames you are looking for\n" * 50),
    ("random.bin", np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()),
    # A playlist would make FFmpeg open other files (or URLs): refused outright.
    ("playlist.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"),
    ("concat.txt", b"ffconcat version 1.0\nfile /etc/passwd\n"),
])
def test_not_a_video(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    expect(errors.NotAVideo, str(path))


def wav_bytes() -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    return out.getvalue()


def image_bytes(ext: str) -> bytes:
    import cv2

    return cv2.imencode(ext, code_frame(1, 64, 64))[1].tobytes()


@pytest.mark.parametrize("name,content,words", [
    ("sound.wav", wav_bytes, "an audio file (wav), not a video"),
    ("photo.jpg", lambda: image_bytes(".jpg"), "an image (jpeg), not a video"),
    ("photo.png", lambda: image_bytes(".png"), "an image (png), not a video"),
    ("photo.mp4", lambda: image_bytes(".png"), "an image (png), not a video"),  # names lie
    ("photo.bmp", lambda: image_bytes(".bmp"), "an image (bmp), not a video"),
    ("photo.tiff", lambda: image_bytes(".tiff"), "an image (tiff), not a video"),
    ("notes.mp4", lambda: "these are not the frames you are looking for\n".encode() * 50,
     "a text file, not a video"),
    ("list.m3u8", lambda: b"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:9/a.ts\n", "a playlist (m3u8)"),
    ("doc.pdf", lambda: b"%PDF-1.4\n" + bytes(range(256)) * 8, "a PDF document, not a video"),
    ("random.bin", lambda: np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes(),
     "not a video in a container beam-i3d opens (mov, mp4"),
])
def test_not_a_video_says_what_the_file_is(tmp_path, name, content, words):
    """Plain words, not FFmpeg's ("Invalid argument" is how the format whitelist refuses)."""
    path = tmp_path / name
    path.write_bytes(content())
    cause = expect(errors.NotAVideo, str(path)).cause
    assert cause.startswith(words), cause
    assert "Invalid argument" not in cause and "Invalid data" not in cause


@pytest.mark.parametrize("kind,keep", [("mp4", 0.5), ("faststart", 0.5), ("faststart", 0.1), ("mkv", 0.5)])
def test_truncated(tmp_path, good, kind, keep):
    data = open(good[kind], "rb").read()
    path = tmp_path / f"truncated.{good[kind].rsplit('.', 1)[1]}"
    path.write_bytes(data[:int(len(data) * keep)])
    expect(errors.CorruptVideo, str(path))


def test_garbage_packets(tmp_path, good):
    """The header is fine but the sample data is overwritten with noise."""
    data = bytearray(open(good["faststart"], "rb").read())
    rng = np.random.default_rng(1)
    middle = slice(len(data) // 3, len(data) - 16)
    data[middle] = rng.integers(0, 256, middle.stop - middle.start, dtype=np.uint8).tobytes()
    path = tmp_path / "noise.mp4"
    path.write_bytes(bytes(data))
    # FFmpeg conceals most damage in H.264; either frames come out or CorruptVideo does.
    try:
        clip = preprocess_clip(str(path))
        assert clip.rgb.shape[1:] == (224, 224, 3)
    except errors.VideoError as e:
        assert type(e) is errors.CorruptVideo and e.uri == str(path)


def damaged_moov(data: bytes, how: str) -> bytes:
    """An MP4 whose moov box (the index of the streams) is damaged."""
    start = data.index(b"moov") - 4
    size = int.from_bytes(data[start:start + 4], "big")
    moov = bytearray(data[start:start + size])
    if how == "noise":  # the first 200 bytes of its content overwritten
        moov[8:208] = np.random.default_rng(3).integers(0, 256, 200, dtype=np.uint8).tobytes()
    else:  # the track's media box misnamed: FFmpeg sees a track of unknown ("data") type
        assert moov.count(b"mdia") == 1
        moov = moov.replace(b"mdia", b"mRia")
    return data[:start] + bytes(moov) + data[start + size:]


@pytest.mark.parametrize("kind", ["mp4", "faststart"])
@pytest.mark.parametrize("how", ["noise", "mdia"])
def test_damaged_moov_is_corrupt(tmp_path, good, kind, how):
    """Not NoVideoStream, which means an audio file."""
    path = tmp_path / "damaged.mp4"
    path.write_bytes(damaged_moov(open(good[kind], "rb").read(), how))
    assert "damaged" in expect(errors.CorruptVideo, str(path)).cause


def test_metadata_that_is_not_utf8(tmp_path):
    """PyAV decodes tags as UTF-8 and raised UnicodeDecodeError on other bytes."""
    path = str(tmp_path / "tagged.mkv")
    with av.open(path, "w") as container:
        container.metadata["title"] = "TITLE-MARKER"
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(10):
            for packet in stream.encode(av.VideoFrame.from_ndarray(code_frame(i, 160, 120), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = open(path, "rb").read()
    assert data.count(b"TITLE-MARKER") == 1
    open(path, "wb").write(data.replace(b"TITLE-MARKER", b"TITLE\xff\xfe\x80MARK"))
    assert preprocess_clip(path).num_frames == 10


def refuse_to_decode(*args):
    raise AssertionError("a frame was decoded")


@pytest.mark.parametrize("width,height,sar,words", [
    (2000, 64, None, "2000x64 frames have an aspect ratio of 31.25, over the limit of 4 "
                     "(raise it with --max-aspect-ratio)"),
    (64, 2000, None, "64x2000 frames have an aspect ratio of 31.25"),
    (410, 100, None, "410x100 frames have an aspect ratio of 4.10, over the limit of 4"),
    # Non-square pixels: the displayed shape counts.
    (200, 100, Fraction(3, 1), "200x100 (displayed 600x100) frames have an aspect ratio of 6.00"),
])
def test_extreme_aspect_ratio_is_refused_before_decoding(tmp_path, monkeypatch, width, height, sar, words):
    """At the recipe's 256-pixel short side a 64x2000 video would be 256x8000 pixels,
    and the full-frame optical flow would all but never end."""
    path = str(tmp_path / "odd.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(code_frame(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with monkeypatch.context() as patch:
        patch.setattr(video, "_frames", refuse_to_decode)
        assert expect(errors.UnsupportedShape, path).cause.startswith(words)
        with pytest.raises(errors.UnsupportedShape):
            video.probe_video(path)
    # The limit can be raised.
    clip = preprocess_clip(path, limits=DecodeLimits(max_aspect_ratio=32))
    assert clip.rgb.shape == (9, 224, 224, 3) and clip.num_frames == 3


def test_aspect_ratio_under_the_limit(tmp_path):
    path = write_video(str(tmp_path / "wide.mp4"), lambda i: code_frame(i, 390, 100), num_frames=3)
    clip = video.decode_clip(path, keep_gray=True)  # 3.9
    assert clip.rgb.shape == (3, 224, 224, 3) and clip.gray.shape == (3, 256, 998)
    square = write_video(str(tmp_path / "square.mp4"), lambda i: code_frame(i, 100, 100), num_frames=3)
    assert video.decode_clip(square, limits=DecodeLimits(max_aspect_ratio=1)).num_frames == 3


@pytest.mark.parametrize("cover", [False, True])
def test_audio_only(tmp_path, cover):
    """Audio, and audio with a cover picture (a one-frame "video" stream marked attached_pic)."""
    path = str(tmp_path / "sound.m4a")
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        if cover:
            picture = container.add_stream("mjpeg", rate=1)
            picture.width = picture.height = 64
            picture.pix_fmt = "yuvj420p"
            picture.disposition = av.stream.Disposition.attached_pic
            for packet in picture.encode(av.VideoFrame.from_ndarray(code_frame(1, 64, 64))):
                container.mux(packet)
            for packet in picture.encode():
                container.mux(packet)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert "audio" in expect(errors.NoVideoStream, path).cause


def test_unsupported_codec(tmp_path, good):
    """An MP4 whose sample entry names a codec FFmpeg does not know ('zzz1' for 'avc1')."""
    data = open(good["mp4"], "rb").read()
    assert data.count(b"avc1") >= 1
    path = tmp_path / "unknown_codec.mp4"
    path.write_bytes(data.replace(b"avc1", b"zzz1"))
    expect(errors.UnsupportedCodec, str(path))


def test_empty_and_out_of_range_times(good):
    uri = good["mp4"]  # 2.0 s
    expect(errors.EmptyClip, uri, 1.0, 1.0)
    expect(errors.EmptyClip, uri, 1.5, 0.5)
    expect(errors.EmptyClip, uri, -2.0, 1.0)
    assert "after the end" in expect(errors.EmptyClip, uri, 2.0, 5.0).cause
    expect(errors.EmptyClip, uri, 30.0)
    # Matroska without an exact duration: found out by decoding to the end.
    expect(errors.EmptyClip, good["mkv"], 2.5, 4.0)


@pytest.mark.parametrize("start", [1e9, 1e15, 1e300, 1.7e308])
def test_huge_start_times(tmp_path_factory, good, start):
    """Seeking to 1e15 s overflowed FFmpeg's 64-bit timestamps (OverflowError); 1e300 s
    overflowed the conversion to microseconds."""
    ts = tmp_path_factory.getbasetemp() / "huge_start.ts"
    if not ts.exists():
        write_video(str(ts), lambda i: code_frame(i, 160, 120), num_frames=50)
    for uri in (str(ts), good["mkv"], good["mp4"]):
        assert "after the end" in expect(errors.EmptyClip, uri, start).cause
        expect(errors.EmptyClip, uri, start, start * 1.0000001 if start < 1e300 else None)


def test_frame_size_limit(tmp_path, good):
    err = expect(errors.VideoTooLarge, good["mp4"], limits=DecodeLimits(max_pixels=150 * 100))
    assert "160x120" in err.cause
    # The default limit: 4096x4096 pixels.
    big = write_video(str(tmp_path / "big.mp4"), [np.zeros((4112, 4096, 3), np.uint8)])
    assert "4096x4112" in expect(errors.VideoTooLarge, big).cause


def test_duration_limit(good):
    expect(errors.VideoTooLong, good["mp4"], limits=DecodeLimits(max_duration_seconds=1.5))


def test_decode_time_budget(good, monkeypatch):
    expect(errors.DecodeTimeout, good["mp4"], limits=DecodeLimits(decode_timeout_seconds=1e-9))

    class SlowClock:  # every look at the clock costs 0.1 s
        ticks = itertools.count()

        @classmethod
        def monotonic(cls):
            return next(cls.ticks) * 0.1

    monkeypatch.setattr(video_open, "time", SlowClock)  # the budget is kept where videos are opened
    err = expect(errors.DecodeTimeout, good["mp4"], limits=DecodeLimits(decode_timeout_seconds=3.0))
    assert "3 s" in err.cause


# Bytes of a 30-frame 160x120 MPEG-TS from write_video, changed by a fuzzer: PyAV's demux
# then met a packet of a stream it did not know and raised IndexError.
_TS_DAMAGE = [(692, 58), (1960, 231), (2188, 23), (2746, 169), (3169, 40), (4597, 184),
              (5187, 201), (5419, 47), (6297, 1), (7010, 237), (7970, 160), (9166, 18),
              (9922, 188), (10274, 163), (10721, 132), (10767, 42), (10906, 41), (12135, 168)]


def test_damaged_mpegts_with_an_unknown_stream(tmp_path):
    path = write_video(str(tmp_path / "f.ts"), lambda i: code_frame(i, 160, 120), num_frames=30)
    data = bytearray(open(path, "rb").read())
    for offset, value in _TS_DAMAGE:
        data[offset] = value
    open(path, "wb").write(bytes(data))
    try:  # with another encoder build the damage may land elsewhere: no IndexError, though
        video.decode_clip(path, 0.5)
    except errors.VideoError as e:
        assert type(e) is errors.CorruptVideo, repr(e)


def test_packets_of_unknown_streams_are_corrupt(good, monkeypatch):
    """The same, simulated: PyAV's demux raises IndexError for such a packet."""
    original = video._OpenVideo._open

    def open_then_break_demux(self, decode_threads):
        original(self, decode_threads)
        container = self.container

        class Broken:
            def demux(self, *streams):
                yield from ()
                raise IndexError("list index out of range")

            def __getattr__(self, name):
                return getattr(container, name)

        self.container = Broken()

    monkeypatch.setattr(video._OpenVideo, "_open", open_then_break_demux)
    assert "not in the header" in expect(errors.CorruptVideo, good["mp4"]).cause
