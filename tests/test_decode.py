"""Decoding real encoded videos: the 25-fps rule, time ranges, geometry, rotation, pixels."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from beam_i3d.errors import EmptyClip
from beam_i3d.media.video import FrameSampler, Orientation, clip_time_range, decode_clip, resized_size
from video_factory import code_frame, read_code, write_video


# --- The rule, as a brute-force reference ------------------------------------------


def reference_indices(frame_times, last_end, start, stop):
    """Source frame index for each output time start + k/25 < min(stop, last_end): the
    last frame with time <= t_k (the first frame for times before it)."""
    out, k = [], 0
    while True:
        t = start + Fraction(k, 25)
        if t >= last_end or (stop is not None and t >= stop):
            return out
        shown = [i for i, ft in enumerate(frame_times) if ft <= t]
        out.append(shown[-1] if shown else 0)
        k += 1


def test_sampler_holds_frames_and_stops():
    # Source frames at 0, 0.1, 0.15 s (0.15 lasts until 0.2); outputs every 0.04 s.
    sampler = FrameSampler(Fraction(0), None)
    assert sampler.push(Fraction(0)) == 0
    assert sampler.push(Fraction(1, 10)) == 3  # t = 0, 0.04, 0.08 show frame 0
    assert sampler.push(Fraction(15, 100)) == 1  # t = 0.12 is frame 1's; 0.16 is not decided yet
    assert sampler.finish(Fraction(2, 10)) == 1  # t = 0.16 (0.20 is past the end)
    assert sampler.next_index == 5
    capped = FrameSampler(Fraction(1, 25), Fraction(3, 25))  # two outputs: 0.04, 0.08
    capped.push(Fraction(0))
    assert capped.push(Fraction(1)) == 2 and capped.done


def test_time_range_rules():
    assert clip_time_range("u", None, None, None) == (0, None)
    assert clip_time_range("u", 1.2, None, 10.0) == (Fraction(6, 5), Fraction(56, 5))
    assert clip_time_range("u", 1.0, 3.0, 10.0) == (1, 3)
    assert clip_time_range("u", 1.0, 30.0, 10.0) == (1, 11)
    for start, end in [(2.0, 2.0), (3.0, 1.0), (-1.0, 2.0), (float("nan"), None), (0.0, float("inf"))]:
        with pytest.raises(EmptyClip) as info:
            clip_time_range("clip.mp4", start, end, 10.0)
        assert "clip.mp4" in str(info.value)
    with pytest.raises(ValueError):
        clip_time_range("u", 0, None, 0)


# --- Frame counts and timestamps on real video -------------------------------------

W, H = 160, 120


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """name -> (path, exact frame times in s, end of the last frame in s)."""
    root = tmp_path_factory.mktemp("sources")
    out = {}
    for name, rate, count in [("ntsc", Fraction(30000, 1001), 120), ("pal", 25, 50), ("fifty", 50, 100)]:
        path = write_video(str(root / f"{name}.mp4"), lambda i: code_frame(i, W, H),
                           num_frames=count, rate=rate)
        times = [Fraction(i) / Fraction(rate) for i in range(count)]
        out[name] = (path, times, Fraction(count) / Fraction(rate))
    # Variable frame rate: irregular intervals of 10..90 ms, in Matroska (1/1000 s).
    rng = np.random.default_rng(7)
    intervals = rng.integers(10, 91, size=59)
    pts = [0, *np.cumsum(intervals).tolist()]
    path = write_video(str(root / "vfr.mkv"), lambda i: code_frame(i, W, H), num_frames=len(pts),
                       pts=pts, time_base=Fraction(1, 1000))
    import av

    with av.open(path) as container:  # the muxer decides the last frame's duration
        last = list(container.decode(video=0))[-1]
        last_end = Fraction(last.pts + last.duration, 1000)
    out["vfr"] = (path, [Fraction(p, 1000) for p in pts], last_end)
    return out


@pytest.mark.parametrize("name,start,end,max_seconds,count", [
    ("ntsc", None, None, None, 101),  # 4.004 s: t = 0.00 ... 4.00 s, see the module doc
    ("ntsc", 1.0, 2.5, 10.0, 38),  # ceil(1.5 * 25)
    ("ntsc", 0.99, None, 2.0, 50),  # capped by max_seconds
    ("pal", None, None, 10.0, 50),  # 1:1
    ("pal", 0.52, 1.0, 10.0, 12),
    ("pal", 1.5, 9.0, 10.0, 13),  # the end is past the video: truncated to 2.0 s
    ("fifty", None, None, 10.0, 50),  # every other frame
    ("fifty", 0.31, 1.2, 10.0, 23),
    ("vfr", None, None, 10.0, None),
    ("vfr", 0.733, 2.01, 10.0, None),
])
def test_frame_counts_and_times(sources, name, start, end, max_seconds, count):
    path, times, last_end = sources[name]
    clip = decode_clip(path, start, end, max_seconds=max_seconds)
    exact_start = Fraction(str(start)) if start is not None else Fraction(0)
    stop = None if end is None else Fraction(str(end))
    if max_seconds is not None:
        cap = exact_start + Fraction(str(max_seconds))
        stop = cap if stop is None else min(stop, cap)
    expected = reference_indices(times, last_end, exact_start, stop)
    if count is not None:
        assert len(expected) == count  # the documented counts follow from the rule
    assert clip.rgb.shape == (len(expected), 224, 224, 3) and clip.rgb.dtype == np.uint8
    assert [read_code(frame) for frame in clip.rgb] == expected
    assert clip.times[0] == pytest.approx(float(exact_start))
    assert clip.times[-1] == pytest.approx(float(exact_start) + (len(expected) - 1) / 25)
    assert clip.end_sec == pytest.approx(float(exact_start) + len(expected) / 25)
    np.testing.assert_allclose(clip.source_times, [float(times[i]) for i in expected], atol=1e-9)


def test_range_after_the_end_is_empty(sources):
    for name in ("pal", "vfr"):
        path, _, last_end = sources[name]
        with pytest.raises(EmptyClip, match="after the end|no frames") as info:
            decode_clip(path, float(last_end) + 0.5, None)
        assert path in str(info.value)


# --- Geometry -------------------------------------------------------------------------


@pytest.mark.parametrize("width,height", [
    (120, 200),  # portrait
    (200, 120),  # landscape
    (100, 100),  # square, upscaled
    (64, 48),  # tiny, upscaled 5.3x
    (640, 360),  # downscaled
])
def test_shapes_for_any_aspect(tmp_path, width, height):
    path = write_video(str(tmp_path / "v.mp4"), lambda i: code_frame(i + 3, width, height), num_frames=4)
    clip = decode_clip(path, keep_gray=True)
    assert clip.rgb.shape == (4, 224, 224, 3)
    assert [read_code(f) for f in clip.rgb] == [3, 4, 5, 6]
    scale = 256 / min(width, height)
    assert clip.gray.shape == (4, round(height * scale), round(width * scale))
    assert min(clip.gray.shape[1:]) == 256
    assert resized_size(width, height) == (round(width * scale), round(height * scale))


def test_non_square_pixels_use_the_display_aspect():
    assert resized_size(720, 576, 16 / 15) == (341, 256)  # 4:3 PAL DVD
    assert resized_size(1440, 1080, 4 / 3) == (455, 256)  # HDV 16:9


@pytest.mark.parametrize("rotation,hflip", [(90, False), (-90, False), (180, False), (0, True), (90, True)])
def test_display_matrix_turns_frames_upright(tmp_path, rotation, hflip):
    """Stored frames are the upright picture turned the other way; the container's
    display matrix (written by PyAV's muxer) says how to turn them back."""
    upright = [code_frame(i + 1, 120, 200) for i in range(3)]  # portrait pictures
    stored = [np.rot90(p[:, ::-1] if hflip else p, k=-rotation // 90) for p in upright]
    import av

    path = str(tmp_path / "phone.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        stream.set_display_rotation(rotation, hflip=hflip)
        for image in stored:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clip = decode_clip(path, keep_gray=True)
    assert [read_code(f) for f in clip.rgb] == [1, 2, 3]
    assert clip.gray.shape[1:] == (427, 256)  # portrait, as displayed
    assert clip.info.rotation == rotation


def test_orientation_from_known_matrices():
    # iPhone portrait: the "rotate 90" (clockwise) matrix of ISO BMFF.
    phone = Orientation.from_display_matrix(np.array([0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30]))
    image = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(phone.apply(image), np.rot90(image, k=-1))
    assert phone.rotation == -90
    assert Orientation.from_display_matrix(None).is_identity


# --- Pixel formats and colour ---------------------------------------------------------

COLOURS = np.array([[200, 60, 40], [40, 180, 90], [50, 70, 200], [220, 220, 60]], np.uint8)


def quadrants(width=256, height=256):
    image = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    for i, colour in enumerate(COLOURS):
        image[(i // 2) * h:(i // 2 + 1) * h, (i % 2) * w:(i % 2 + 1) * w] = colour
    return image


def quadrant_means(crop):
    # quadrant centres of the 256x256 source in the 224 crop: 64 - 16 and 192 - 16
    return np.array([crop[y - 8:y + 8, x - 8:x + 8].reshape(-1, 3).mean(0)
                     for y in (48, 176) for x in (48, 176)])


@pytest.mark.parametrize("codec,pix_fmt,ext", [
    ("libx264", "yuv420p", "mp4"),  # the fast path
    ("libx264", "yuvj420p", "mp4"),  # full range, fast path
    ("libx264", "yuv444p", "mkv"),
    ("libx264", "yuv420p10le", "mkv"),  # 10 bit: generic path
    ("libx264rgb", "rgb24", "mkv"),
    ("ffv1", "bgr0", "mkv"),
])
def test_any_pixel_format_comes_out_rgb(tmp_path, codec, pix_fmt, ext):
    path = write_video(str(tmp_path / f"c.{ext}"), [quadrants()] * 2, codec=codec, pix_fmt=pix_fmt,
                       crf=10)
    clip = decode_clip(path)
    assert clip.rgb.dtype == np.uint8 and clip.rgb.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(quadrant_means(clip.rgb[0]), COLOURS, atol=6)


def test_bt709_stream_is_converted_with_its_matrix(tmp_path):
    """HD video tags BT.709; decoding with the BT.601 default would shift saturated
    colours by 10-20 levels."""
    import av

    path = str(tmp_path / "hd.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 256
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        stream.codec_context.colorspace = 1  # AVCOL_SPC_BT709, written to the H.264 VUI
        stream.codec_context.color_primaries = 1
        stream.codec_context.color_trc = 1
        rgb = av.VideoFrame.from_ndarray(quadrants())
        yuv = rgb.reformat(format="yuv420p", dst_colorspace="ITU709")
        yuv.colorspace = 1
        for packet in stream.encode(yuv):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clip = decode_clip(path)
    means = quadrant_means(clip.rgb[0])
    np.testing.assert_allclose(means, COLOURS, atol=6)


def test_rgb_conversion_is_unbiased(tmp_path):
    """Both conversion paths (planar YUV: resize planes, crop, convert; other formats:
    convert at full size, resize) against a float64 BT.601 conversion of the decoded
    planes, resized the same way: no bias beyond rounding (swscale's default fast
    converters would make RGB about 1 level too dark)."""
    import av
    import cv2

    from beam_i3d.media.video import center_crop, frame_to_rgb
    from video_factory import textured_image

    texture = np.dstack([textured_image(360, 640, seed=s, sigma=12) for s in range(3)])
    path = write_video(str(tmp_path / "t.mp4"), [texture], crf=10)
    with av.open(path) as container:
        frame = next(container.decode(video=0))
    size = resized_size(frame.width, frame.height)
    planes = frame.to_ndarray().astype(np.float64)  # [540, 640]: Y, then U and V
    y = (planes[:360] - 16) * 255 / 219
    u, v = ((cv2.resize(p.reshape(180, 320), (640, 360), interpolation=cv2.INTER_LINEAR) - 128) * 255 / 224
            for p in (planes[360:450], planes[450:]))
    exact = np.dstack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u])
    exact = center_crop(cv2.resize(exact, size, interpolation=cv2.INTER_LINEAR))
    fast = frame_to_rgb(frame, size, crop=True)
    generic = frame_to_rgb(frame.reformat(format="yuv420p10le"), size, crop=True)  # same pixels, 10 bit
    for rgb in (fast, generic):
        error = rgb.astype(np.float64) - exact
        assert np.all(np.abs(error.mean(axis=(0, 1))) < 0.5)
        assert np.abs(error).mean() < 1.0


@pytest.mark.parametrize("colorspace", [2, 1, 5, 6, 7, 9])  # unspecified, 709, 601 x2, 240M, 2020
@pytest.mark.parametrize("pix_fmt,full_range", [("yuv444p", False), ("yuvj444p", True)])
def test_own_yuv_conversion_matches_swscale(colorspace, pix_fmt, full_range):
    import av
    from av.video.reformatter import Interpolation

    from beam_i3d.media.video import yuv_to_rgb

    # Legal codes of limited-range video (swscale's integer path wraps around for some
    # out-of-range codes, such as Y < 16 with extreme chroma).
    yuv = np.random.default_rng(colorspace).integers(16, 236, (64, 64, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(yuv.transpose(2, 0, 1)), format=pix_fmt)
    frame.colorspace = colorspace
    exact = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
    reference = frame.to_ndarray(format="rgb24", interpolation=exact).astype(int)
    ours = yuv_to_rgb(yuv, colorspace, full_range).astype(int)
    assert np.abs(ours - reference).max() <= 1
    assert np.abs(ours - reference).mean() < 0.1


def test_a_seek_that_lands_after_the_start_is_retried(tmp_path, monkeypatch):
    """Some indexes are inexact: the first seek lands 1 s late here, and the decoder must
    go further back rather than hold a later frame for the start."""
    from beam_i3d.media import video as video_module

    class LateFirstSeek:
        def __init__(self, container):
            self._container, self.seeks = container, []

        def seek(self, offset, stream=None, **kwargs):
            if not self.seeks:
                offset += int(1 / stream.time_base)
            self.seeks.append(offset)
            return self._container.seek(offset, stream=stream, **kwargs)

        def __getattr__(self, name):
            return getattr(self._container, name)

    opened = []
    original_open = video_module._OpenVideo._open

    def open_with_late_seek(self, decode_threads):
        original_open(self, decode_threads)
        self.container = LateFirstSeek(self.container)
        opened.append(self.container)

    path = write_video(str(tmp_path / "short_gop.mp4"), lambda i: code_frame(i, W, H),
                       num_frames=100, options={"g": "5"})  # a keyframe every 0.2 s
    monkeypatch.setattr(video_module._OpenVideo, "_open", open_with_late_seek)
    clip = decode_clip(path, 1.3, 1.7)
    assert len(opened[0].seeks) >= 2  # retried
    times = [Fraction(i, 25) for i in range(100)]
    assert [read_code(f) for f in clip.rgb] == reference_indices(times, Fraction(4), Fraction(13, 10),
                                                                   Fraction(17, 10))


def test_mpegts_seeking_gives_the_same_frames(tmp_path):
    path = write_video(str(tmp_path / "long_gop.ts"), lambda i: code_frame(i, W, H), num_frames=100,
                       options={"g": "40"})
    clip = decode_clip(path, 2.1, 3.0)
    times = [Fraction(i, 25) for i in range(100)]
    assert [read_code(f) for f in clip.rgb] == reference_indices(times, Fraction(4), Fraction(21, 10),
                                                                   Fraction(3))
