"""Presets: the options of published I3D feature sets (``score --preset NAME``), in one
table that ``score --list-presets`` and the manual's "Features for research" (docs/features.md) read.

A preset sets the streams and the frame windows (``--window-frames``,
``--stride-frames``, ``--fps``) a feature set was made with; options given beside it
override its values, and the run's metadata records the preset and what was
overridden (``beam_i3d.preset``, ``beam_i3d.overridden``). A preset names the weights
the set was made with, but cannot pass them: the release's ``rgb_imagenet`` and
``flow_imagenet`` checkpoints are the user's to download and give with
``--rgb-checkpoint`` / ``--flow-checkpoint`` (the default RGB weights are
``rgb_scratch``, and flow has no default), so a preset run without them is a usage
error naming both options.
"""

from __future__ import annotations

import dataclasses

from beam_i3d.job.windows import NATIVE

WEIGHTS_URL = "https://github.com/deepmind/kinetics-i3d/tree/master/data/checkpoints"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One published feature set: ``streams``, windows of ``window_frames`` every
    ``stride_frames`` frames at ``fps`` (an int, or "native"), the weights it was made
    with (by stream), where the numbers come from, and what differs here."""

    name: str
    streams: tuple[str, ...]
    window_frames: int
    stride_frames: int
    fps: int | str
    weights: dict
    source: str
    differs: str

    def options(self) -> dict:
        """The score options it sets (argparse destinations -> values)."""
        return {"streams": self.streams, "window_frames": self.window_frames,
                "stride_frames": self.stride_frames, "fps": self.fps}

    def command_line(self) -> str:
        return (f"--streams {','.join(self.streams)} --window-frames {self.window_frames} "
                f"--stride-frames {self.stride_frames} --fps {self.fps}")

    def weights_line(self) -> str:
        return ", ".join(f"--{s}-checkpoint <{w}>" for s, w in self.weights.items())


_IMAGENET = {"rgb": "rgb_imagenet", "flow": "flow_imagenet"}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        name="thumos14-actionformer",
        streams=("rgb", "flow"), window_frames=16, stride_frames=4, fps=NATIVE,
        weights=_IMAGENET,
        source="ActionFormer's THUMOS14 I3D features (github.com/happyharrycn/"
               "actionformer_release README and configs/thumos_i3d.yaml: two-stream I3D "
               "pretrained on Kinetics, clips of 16 frames at the video frame rate "
               "(~30 fps), stride 4 frames; feat_stride 4, num_frames 16, input_dim "
               "2048, one .npy per video)",
        differs="flow is this tool's TV-L1 (OpenCV DualTVL1 or its TensorFlow port), "
                "quantised as the kinetics-i3d release did; ActionFormer's README does "
                "not say how the set's flow was computed or its frames resized, so expect "
                "close, not identical, features; T = (N - 16) // 4 + 1 full windows (a "
                "partial tail is dropped)"),
    Preset(
        name="activitynet-actionformer",
        streams=("rgb", "flow"), window_frames=16, stride_frames=16, fps=25,
        weights=_IMAGENET,
        source="ActionFormer's ActivityNet 1.3 I3D config (github.com/happyharrycn/"
               "actionformer_release configs/anet_i3d.yaml: feat_stride 16, num_frames "
               "16, default_fps 25, input_dim 2048, file_prefix v_); ActionFormer's "
               "headline ActivityNet results use TSP features instead (R(2+1)D, 16 "
               "frames every 16 at 15 fps), which this tool does not make",
        differs="frames resampled to 25 fps by the kinetics-i3d recipe's rule (the frame "
                "on screen at each 1/25 s; the set's own resampling is not documented); "
                "TV-L1 flow as above; the config reads v_<id>.npy: use clip_ids "
                "v_<youtube id> in the manifest; ActionFormer then resizes each video's "
                "features to 192 steps itself (force_upsampling)"),
    Preset(
        name="video-features-i3d",
        streams=("rgb", "flow"), window_frames=64, stride_frames=64, fps=NATIVE,
        weights=_IMAGENET,
        source="video_features' I3D defaults (github.com/v-iashin/video_features "
               "configs/i3d.yml: stack_size 64, step_size 64, extraction_fps null = the "
               "video's own rate, streams null = both)",
        differs="video_features computes flow with RAFT (PWC-Net in older versions) "
                "where this tool uses TV-L1, with PyTorch ports of the weights; it "
                "writes one .npy per stream ([T, 1024] each): here one [T, 2048] file, "
                "RGB in columns 0-1023 and flow in 1024-2047"),
)}


def preset(name: str) -> Preset:
    """The preset ``name``; KeyError naming the choices for another name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def listing() -> str:
    """``score --list-presets``: each preset's options, source and differences."""
    lines = []
    for p in PRESETS.values():
        lines += [f"{p.name}",
                  f"  options: {p.command_line()}",
                  f"  weights: {p.weights_line()} (the kinetics-i3d release's "
                  f"checkpoints: {WEIGHTS_URL})",
                  f"  source:  {p.source}",
                  f"  differs: {p.differs}", ""]
    return "\n".join(lines).rstrip() + "\n"


def apply(name: str, given: dict) -> tuple[dict, tuple[str, ...]]:
    """The options of preset ``name`` with those ``given`` (destinations -> values,
    None: not given) laid over them: ``(options, names of the preset's options that
    were given with another value)``."""
    chosen = preset(name)
    out, overridden = {}, []
    for key, value in chosen.options().items():
        mine = given.get(key)
        if mine is None:
            out[key] = value
        else:
            out[key] = mine
            if mine != value:
                overridden.append(key)
    return out, tuple(overridden)
