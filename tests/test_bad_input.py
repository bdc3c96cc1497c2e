"""Untrusted input: every kind of bad file gives its typed error, naming the URI and cause."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from beam_i3d import errors, video
from beam_i3d.preprocess import preprocess_clip
from beam_i3d.recipe import DecodeLimits
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
    expect(errors.VideoNotFound, "nosuchscheme://bucket/clip.mp4")


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


def test_still_image_is_not_a_video(tmp_path):
    import cv2

    path = tmp_path / "photo.jpg"
    path.write_bytes(cv2.imencode(".jpg", code_frame(1, 64, 64))[1].tobytes())
    expect(errors.NotAVideo, str(path))


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

    monkeypatch.setattr(video, "time", SlowClock)
    err = expect(errors.DecodeTimeout, good["mp4"], limits=DecodeLimits(decode_timeout_seconds=3.0))
    assert "3 s" in err.cause
