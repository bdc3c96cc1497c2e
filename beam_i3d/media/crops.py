"""Spatial crops of the I3D recipe: ``score --crops center|five|ten`` (pure numpy).

Every crop is 224x224 (``CROP_SIZE``), cut from the recipe's resized frame (shorter
side 256, ``H x W``), the frame today's centre crop is cut from:

* ``center``: one crop, the centre (offsets ``(H - 224) // 2``, ``(W - 224) // 2``,
  rounded down): what ``score`` always did;
* ``five``: torchvision ``FiveCrop``'s order: 0 top-left ``(0, 0)``, 1 top-right
  ``(0, W-224)``, 2 bottom-left ``(H-224, 0)``, 3 bottom-right ``(H-224, W-224)``,
  4 centre (as ``center``);
* ``ten``: torchvision ``TenCrop``'s order: the five, then the same five cut from the
  horizontally mirrored frame: 5 is the mirror image of the top-right region, 6 of the
  top-left, 7 of the bottom-right, 8 of the bottom-left, 9 the mirrored frame's centre
  (the mirror of the region at ``W - 224 - (W - 224) // 2``: one column right of the
  centre when ``W - 224`` is odd). The ten-crop I3D features published for UCF-Crime
  follow this convention, crop index for crop index.

Flow under a mirror: a mirrored field is the field mirrored with its x component (u)
negated (motion to the right becomes motion to the left); the negation is made on the
float field, before quantisation, so a mirrored crop's levels are those of ``-u``
(quantising ``-u`` is not ``255 - levels(u)``: rounding ties go to even, and zero
motion is 128 either way). The flow is computed once per frame pair on the whole
resized frame, as always; crops are slices of it.

What a multi-crop clip holds (:class:`~beam_i3d.media.preprocess.ClipTensors` with
``crops`` five or ten): ``rgb`` the whole resized frames ``[T,H,W,3]`` uint8 (not ten
copies: the crops, mirrors included, are cut when a forward is stacked,
:func:`crop_stream`); ``flow`` the whole fields' levels ``[T',H,W,C]``
(:func:`flow_levels`: uint8 ``C = 2``, u and v, or ``C = 3`` for ``ten`` quantised, the
third channel the levels of ``-u``; float32 ``C = 2`` in [-1, 1] unquantised, where
the levels of ``-u`` are exactly ``-u``). ``center`` keeps the ``[T,224,224,C]`` crops.
"""

from __future__ import annotations

import numpy as np

from beam_i3d.media.recipe import CROP_SIZE

CROPS = ("center", "five", "ten")  # the --crops choices
DEFAULT_CROPS = "center"
CROP_COUNTS = {"center": 1, "five": 5, "ten": 10}
_MIRRORED_U = 2  # channel of -u's levels in a ten-crop quantised flow stream


def crop_count(crops: str) -> int:
    """How many network inputs a clip makes under ``crops`` (1, 5 or 10)."""
    try:
        return CROP_COUNTS[crops]
    except KeyError:
        raise ValueError(f"crops must be one of {', '.join(CROPS)}, got {crops!r}") from None


def crop_boxes(crops: str, height: int, width: int,
               size: int = CROP_SIZE) -> list[tuple[int, int, bool]]:
    """``(top, left, mirrored)`` of each crop in the documented order (module doc):
    ``top``/``left`` in the frame the crop is cut from (the mirrored frame where
    ``mirrored``). H and W must be >= ``size``."""
    count = crop_count(crops)
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from {height}x{width}")
    bottom, right = height - size, width - size
    centre = (bottom // 2, right // 2)
    if count == 1:
        return [centre + (False,)]
    five = [(0, 0), (0, right), (bottom, 0), (bottom, right), centre]
    boxes = [box + (False,) for box in five]
    if count == 10:
        boxes += [box + (True,) for box in five]
    return boxes


def cut(frames: np.ndarray, top: int, left: int, mirrored: bool,
        size: int = CROP_SIZE) -> np.ndarray:
    """The ``size x size`` window at ``(top, left)`` of ``frames`` ``[T,H,W,C]``, or of
    the horizontally mirrored frames (``frames[:, :, ::-1]``) where ``mirrored``; a view
    (channels untouched: see :func:`crop_stream` for the flow's u)."""
    if mirrored:
        frames = frames[:, :, ::-1]
    return frames[:, top:top + size, left:left + size]


def flow_channels(crops: str, quantized: bool) -> int:
    """Channels of a flow stream's whole-frame levels under ``crops`` (module doc)."""
    return 3 if crops == "ten" and quantized else 2


def flow_levels(fields: np.ndarray, crops: str, quantize: bool) -> np.ndarray:
    """Whole float fields ``[N,H,W,2]`` (pixels, u then v) -> what a multi-crop flow
    stream holds: uint8 levels ``[N,H,W,2]``, plus for ``ten`` a third channel, the levels
    of ``-u`` (``[N,H,W,3]``); or float32 in [-1, 1] ``[N,H,W,2]`` unquantised."""
    from beam_i3d.media import flow as flow_ops

    if not quantize:
        return flow_ops.flow_to_unit_range(fields)
    levels = flow_ops.quantize_flow(fields)
    if flow_channels(crops, quantize) == 2:
        return levels
    out = np.empty(fields.shape[:-1] + (3,), np.uint8)
    out[..., :2] = levels
    out[..., _MIRRORED_U] = flow_ops.quantize_flow(-fields[..., 0])
    return out


def mirror_flow(fields: np.ndarray) -> np.ndarray:
    """Float fields ``[N,H,W,2]`` (pixels) of the horizontally mirrored frames: mirrored,
    u negated (a copy)."""
    out = np.ascontiguousarray(fields[:, :, ::-1])
    out[..., 0] = -out[..., 0]
    return out


def crop_stream(stream: str, array: np.ndarray, crops: str, index: int) -> np.ndarray:
    """Crop ``index`` (documented order) of a multi-crop clip's ``stream`` array (module
    doc): ``[T,224,224,3]`` uint8 for rgb, ``[T',224,224,2]`` for flow (uint8 levels or
    float32), a new array. A mirrored flow crop takes the levels of ``-u`` (quantised),
    or ``-u`` (float)."""
    top, left, mirrored = crop_boxes(crops, array.shape[1], array.shape[2])[index]
    piece = cut(array, top, left, mirrored)
    if stream != "flow":
        return np.ascontiguousarray(piece)
    out = np.empty(piece.shape[:-1] + (2,), array.dtype)
    if not mirrored:
        out[...] = piece[..., :2]
    elif array.dtype == np.uint8:
        if array.shape[-1] != 3:
            raise ValueError("a mirrored quantised flow crop needs the levels of -u "
                             "(a ten-crop flow stream, flow_levels)")
        out[..., 0] = piece[..., _MIRRORED_U]
        out[..., 1] = piece[..., 1]
    else:
        out[..., 0] = -piece[..., 0]
        out[..., 1] = piece[..., 1]
    return out
