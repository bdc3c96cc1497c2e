"""``beam-i3d preprocess``: one video -> the .npy inputs of the kinetics-i3d release.

Writes ``PREFIX_rgb.npy`` (float32 ``[1,T,224,224,3]`` in [-1, 1]) and/or
``PREFIX_flow.npy`` (float32 ``[1,T',224,224,2]`` in [-1, 1]), the layout of the release's
``data/v_CricketShot_g04_c01_{rgb,flow}.npy``, so that what the model sees can be
inspected, and fed to the original ``evaluate_sample.py`` too.
"""

from __future__ import annotations

import argparse
import io
import os

from beam_i3d.cli.options import add_clip_options, decode_limits_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", metavar="VIDEO", help="video file: a path or a URI (gs://...)")
    parser.add_argument("--start", type=float, metavar="SEC", help="start time in seconds (default 0)")
    parser.add_argument("--end", type=float, metavar="SEC",
                        help="end time in seconds, exclusive (default: the end of the video)")
    add_clip_options(parser)
    parser.add_argument("--out", required=True, metavar="PREFIX",
                        help="output prefix (local or gs://): writes PREFIX_rgb.npy, PREFIX_flow.npy")


def run(args: argparse.Namespace, extra_args: list[str]) -> int:
    import numpy as np

    from beam_i3d.media.preprocess import preprocess_clip, uint8_to_unit_range

    clip = preprocess_clip(args.video, args.start, args.end, streams=args.streams,
                           max_seconds=args.max_seconds, quantize_flow=args.quantize_flow,
                           flow_backend=args.flow_backend,
                           flow_batch_pairs=args.flow_batch_pairs,
                           limits=decode_limits_from_args(args))
    written = []
    for stream in args.streams:
        tensor = getattr(clip, stream)
        if tensor.dtype == np.uint8:  # RGB, and quantised flow: the model's uint8 map
            tensor = uint8_to_unit_range(tensor)
        path = f"{args.out}_{stream}.npy"
        _save_npy(path, tensor[None].astype(np.float32))
        written.append(f"{path} {list(tensor[None].shape)}")
    print(f"{args.video}: {clip.num_frames} frames at 25 fps from {clip.start_sec:g} s to "
          f"{clip.end_sec:g} s (source {clip.source_width}x{clip.source_height}, "
          f"{clip.source_codec}, rotation {clip.rotation})")
    for line in written:
        print(f"wrote {line}")
    return 0


def _save_npy(path: str, array) -> None:
    import numpy as np

    from beam_i3d import fileio

    if fileio.is_local(path):
        path = fileio.local_path(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        np.save(path, array, allow_pickle=False)
        return
    from apache_beam.io.filesystems import FileSystems

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    with FileSystems.create(path, mime_type="application/octet-stream") as f:
        f.write(buffer.getvalue())
