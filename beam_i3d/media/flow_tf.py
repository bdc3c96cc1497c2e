"""TV-L1 optical flow in TensorFlow: OpenCV's CPU DualTVL1, batched over frame pairs.

This is a port of ``cv::optflow::DualTVL1OpticalFlow`` (opencv_contrib
``modules/optflow/src/tvl1flow.cpp``, unchanged from 4.x to 5.x and used by the
installed OpenCV 5.0.0) to TensorFlow ops that run over a whole batch of frame pairs at
once, on CPU or GPU, in the process that runs I3D. It follows OpenCV step by step
(Zach, Pock & Bischof 2007; Sanchez, Meinhardt-Llopis & Facciolo 2013):

* Pyramid: level ``s`` is level ``s-1`` resized by ``scale_step`` (0.8) with bilinear
  interpolation and no smoothing, exactly as ``cv::resize(src, dst, Size(), 0.8, 0.8,
  INTER_LINEAR)``: destination size ``round(0.8 * n)``, source coordinate
  ``(d + 0.5) / 0.8 - 0.5`` (the nominal scale, not the ratio of the rounded sizes),
  replicated edges. The pyramid stops before the first level narrower or shorter than
  16 px.
* Coarse to fine: flow starts at zero on the coarsest level; after each level it is
  resized bilinearly to the next finer level's size (scale = ratio of the sizes) and
  multiplied by ``1 / scale_step``.
* Per level: the dual variables ``p`` are reset to zero once; then ``warps`` times the
  second image and its centred gradient are warped by the current flow with bicubic
  interpolation (Keys kernel, a = -0.75, full float coordinates as in OpenCV 5's
  ``remap``, taps outside the image read 0, i.e. ``BORDER_CONSTANT``), and up to
  ``outer_iterations x inner_iterations`` primal-dual iterations run. A 5x5 median
  filter (replicated border, as ``cv::medianBlur``) is applied to both flow components
  at the start of every outer iteration. The iterations of a warp stop as soon as the
  sum over the level of the squared change of the flow falls to ``epsilon**2 * area``
  or below; that test is made per pair (an active mask inside the loop; a finished pair
  is frozen while the others go on).
* Discretisation as OpenCV's: centred differences with one-sided halves at the image
  border for the image gradient; forward differences (zero at the last column / row)
  for the flow gradient; the matching backward-difference divergence with zero
  outside the image.

Units and conventions: flow in pixels of the input frames, float32, channel 0 is x
(to the right), channel 1 is y (down), from ``prev`` to ``nxt``:
``nxt[y + flow[y, x, 1], x + flow[y, x, 0]] ~ prev[y, x]``, as OpenCV.

Not ported: ``gamma`` (the illumination term; OpenCV's default 0 disables it) and
``useInitialFlow`` (OpenCV's default False).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from beam_i3d.errors import InvalidFlowInput

# OpenCV's defaults (cv::optflow::DualTVL1OpticalFlow::create()).
TAU = 0.25  # time step of the numerical scheme
LAMBDA = 0.15  # weight of the data term (smaller = smoother flow)
THETA = 0.3  # coupling between the two variables of the splitting
NSCALES = 5  # pyramid levels
WARPS = 5  # warps of the second image per level
EPSILON = 0.01  # stopping threshold (pixels, root mean square change per iteration)
INNER_ITERATIONS = 30
OUTER_ITERATIONS = 10
SCALE_STEP = 0.8  # size ratio between consecutive pyramid levels
MEDIAN_FILTERING = 5  # median filter size; 1 (or 0) turns it off

MIN_LEVEL_SIZE = 16  # a pyramid level under this many px high or wide is not used
MIN_FRAME_SIZE = 16  # smallest frame height and width accepted
BICUBIC_A = -0.75  # the Keys cubic kernel's parameter OpenCV uses
FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class TVL1Params:
    """The parameters of DualTVL1 under OpenCV's names; the defaults are OpenCV's."""

    tau: float = TAU
    lambda_: float = LAMBDA
    theta: float = THETA
    nscales: int = NSCALES
    warps: int = WARPS
    epsilon: float = EPSILON
    inner_iterations: int = INNER_ITERATIONS
    outer_iterations: int = OUTER_ITERATIONS
    scale_step: float = SCALE_STEP
    median_filtering: int = MEDIAN_FILTERING

    def __post_init__(self):
        if self.nscales < 1 or self.warps < 0:
            raise ValueError(f"need nscales >= 1 and warps >= 0, got {self}")
        if self.inner_iterations < 0 or self.outer_iterations < 0:
            raise ValueError(f"iteration counts must be >= 0, got {self}")
        if not 0.0 < self.scale_step < 1.0:
            raise ValueError(f"scale_step must be in (0, 1), got {self.scale_step}")
        if self.median_filtering not in (0, 1, 3, 5):
            # cv::medianBlur on float32 images supports only 3 and 5.
            raise ValueError(
                f"median_filtering must be 0/1 (off), 3 or 5, got {self.median_filtering}"
            )
        if self.theta <= 0:
            raise ValueError(f"theta must be > 0, got {self.theta}")


DEFAULT_PARAMS = TVL1Params()


# --- building blocks ------------------------------------------------------------------
#
# Every plane batch is laid out [..., H, W] (batch and channel axes first), so that the
# innermost axis is the image width: XLA's CPU code vectorises along it (a trailing
# axis of 2 flow channels made the inner loops 4-5x slower).


def _linear_taps(n_src: tf.Tensor, n_dst: tf.Tensor, scale: tf.Tensor):
    """Source indices and weights of OpenCV's INTER_LINEAR resize along one axis.

    Destination index ``d`` reads ``(d + 0.5) * scale - 0.5`` (``scale`` = source px per
    destination px, float64); left of the first and right of the last source pixel the
    edge pixel is replicated. Returns ``(i0, i1, a)``: int32 ``[n_dst]`` twice and the
    float32 weight ``a`` of ``i1`` (``1 - a`` of ``i0``).
    """
    d = tf.range(n_dst, dtype=tf.float64)
    f = (d + 0.5) * scale - 0.5
    fl = tf.floor(f)
    a = tf.cast(f - fl, tf.float32)
    i0 = tf.cast(fl, tf.int32)
    below = i0 < 0
    above = i0 >= n_src - 1
    a = tf.where(below | above, tf.zeros_like(a), a)
    i0 = tf.where(below, tf.zeros_like(i0), i0)
    i0 = tf.where(above, tf.fill(tf.shape(i0), n_src - 1), i0)
    i1 = tf.minimum(i0 + 1, n_src - 1)
    return i0, i1, a


def _resize_bilinear(x: tf.Tensor, out_h, out_w, scale_y, scale_x) -> tf.Tensor:
    """``cv::resize(..., INTER_LINEAR)`` of float32 planes ``x`` [..., H, W].

    Interpolates along x first, then along y, as OpenCV does for float images.
    ``scale_*`` are source px per destination px (float64 scalars).
    """
    xi0, xi1, ax = _linear_taps(tf.shape(x)[-1], out_w, scale_x)
    yi0, yi1, ay = _linear_taps(tf.shape(x)[-2], out_h, scale_y)
    ay = ay[:, None]
    rows = tf.gather(x, xi0, axis=-1) * (1.0 - ax) + tf.gather(x, xi1, axis=-1) * ax
    return (tf.gather(rows, yi0, axis=-2) * (1.0 - ay)
            + tf.gather(rows, yi1, axis=-2) * ay)


def _centered_gradient(img: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Half the central difference of planes [..., H, W] along x and along y.

    At the border OpenCV takes half the one-sided difference, which is the central
    difference of the edge-replicated image.
    """
    left = tf.concat([img[..., :1], img[..., :-1]], axis=-1)
    right = tf.concat([img[..., 1:], img[..., -1:]], axis=-1)
    up = tf.concat([img[..., :1, :], img[..., :-1, :]], axis=-2)
    down = tf.concat([img[..., 1:, :], img[..., -1:, :]], axis=-2)
    return 0.5 * (right - left), 0.5 * (down - up)


def _forward_gradient(u: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Forward differences of [..., H, W] along x and y; 0 on the last column / row."""
    dx = tf.concat([u[..., 1:] - u[..., :-1], tf.zeros_like(u[..., :1])], axis=-1)
    dy = tf.concat([u[..., 1:, :] - u[..., :-1, :], tf.zeros_like(u[..., :1, :])], axis=-2)
    return dx, dy


def _divergence(px: tf.Tensor, py: tf.Tensor) -> tf.Tensor:
    """Backward-difference divergence of the field (px, py), [..., H, W] each.

    ``px[x] - px[x-1] + py[y] - py[y-1]`` with zero left of column 0 and above row 0
    (OpenCV's ``divergence``).
    """
    px_left = tf.concat([tf.zeros_like(px[..., :1]), px[..., :-1]], axis=-1)
    py_up = tf.concat([tf.zeros_like(py[..., :1, :]), py[..., :-1, :]], axis=-2)
    return (px - px_left) + (py - py_up)


def _cubic_weights(t: tf.Tensor) -> list[tf.Tensor]:
    """Keys cubic weights (a = -0.75) of the 4 taps at offsets -1, 0, 1, 2 from floor."""
    a = BICUBIC_A
    s = t + 1.0
    w0 = ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    r = 1.0 - t
    w2 = ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0
    w3 = 1.0 - w0 - w1 - w2
    return [w0, w1, w2, w3]


def _warp_bicubic(img: tf.Tensor, flow: tf.Tensor) -> tf.Tensor:
    """Sample planes ``img`` [N, C, H, W] at ``(x + flow[:, 0], y + flow[:, 1])``.

    ``cv::remap`` with INTER_CUBIC and BORDER_CONSTANT 0 (taps outside the image read
    0). ``flow`` is [N, 2, H, W] float32 pixels.
    """
    shape = tf.shape(img)
    n, c, h, w = shape[0], shape[1], shape[2], shape[3]
    # Sample positions; clipping far outside changes nothing (all taps read 0 there)
    # and keeps the int32 conversion safe.
    gx = tf.range(w, dtype=tf.float32)[None, None, :] + flow[:, 0]
    gy = tf.range(h, dtype=tf.float32)[None, :, None] + flow[:, 1]
    gx = tf.clip_by_value(gx, -8.0, tf.cast(w, tf.float32) + 8.0)
    gy = tf.clip_by_value(gy, -8.0, tf.cast(h, tf.float32) + 8.0)
    fx = tf.floor(gx)
    fy = tf.floor(gy)
    wx = _cubic_weights(gx - fx)
    wy = _cubic_weights(gy - fy)
    x0 = tf.cast(fx, tf.int32) - 1
    y0 = tf.cast(fy, tf.int32) - 1
    flat = tf.reshape(img, [n, c, h * w])
    out = None
    for j in range(4):
        yj = y0 + j
        y_in = (yj >= 0) & (yj < h)
        row_base = tf.clip_by_value(yj, 0, h - 1) * w
        row = None
        for i in range(4):
            xi = x0 + i
            inside = y_in & (xi >= 0) & (xi < w)
            index = tf.reshape(row_base + tf.clip_by_value(xi, 0, w - 1), [n, h * w])
            taps = tf.reshape(tf.gather(flat, index, axis=2, batch_dims=1), [n, c, h, w])
            weight = tf.where(inside, wx[i], tf.zeros_like(wx[i]))[:, None]
            term = taps * weight
            row = term if row is None else row + term
        term = row * wy[j][:, None]
        out = term if out is None else out + term
    return out


def _edge_pad(x: tf.Tensor, r: int) -> tf.Tensor:
    """Replicate the border of planes [..., H, W] by ``r`` px on each side."""
    x = tf.concat([x[..., :1, :]] * r + [x] + [x[..., -1:, :]] * r, axis=-2)
    return tf.concat([x[..., :1]] * r + [x] + [x[..., -1:]] * r, axis=-1)


# Compare-exchange helpers on lists of equally shaped tensors, elementwise.


def _compare_exchange(v: list[tf.Tensor], i: int, j: int) -> None:
    v[i], v[j] = tf.minimum(v[i], v[j]), tf.maximum(v[i], v[j])


def _drop_min(values: list[tf.Tensor]) -> list[tf.Tensor]:
    """The values without their (elementwise) minimum."""
    v = list(values)
    for i in range(1, len(v)):
        _compare_exchange(v, 0, i)
    return v[1:]


def _drop_max(values: list[tf.Tensor]) -> list[tf.Tensor]:
    """The values without their (elementwise) maximum."""
    v = list(values)
    last = len(v) - 1
    for i in range(last):
        _compare_exchange(v, i, last)
    return v[:last]


def _median_by_forgetful_selection(values: list[tf.Tensor]) -> tf.Tensor:
    """Elementwise median of an odd number of tensors.

    Hold n//2 + 2 of the n values, drop their minimum and maximum (neither can be the
    median of all n), take in the next value, repeat until one is left.
    """
    held, rest = values[: len(values) // 2 + 2], values[len(values) // 2 + 2:]
    while len(held) > 1:
        held = _drop_max(_drop_min(held))
        if rest:
            held.append(rest.pop(0))
    return held[0]


# A sorting network for 5 values (9 compare-exchanges).
_SORT5 = ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2))


def _median_filter(u: tf.Tensor, size: int) -> tf.Tensor:
    """``cv::medianBlur`` (replicated border) of planes [..., H, W], size 3 or 5.

    Exact. Size 5: sort each column of the window (shared between horizontally
    adjacent windows); once columns and then rows of a 5x5 are sorted, the element of
    rank (r, c) is the median only if (r+1)(c+1) <= 13 and (5-r)(5-c) <= 13: 13
    candidates, 6 known below and 6 known above the median, which is therefore the
    median of the candidates. Sorting the rows is not needed, only picking the
    candidate ranks out of each row. Size 3: forgetful selection over the 9 values.
    """
    r = size // 2
    h, w = tf.shape(u)[-2], tf.shape(u)[-1]
    padded = _edge_pad(u, r)
    if size == 3:
        return _median_by_forgetful_selection(
            [padded[..., dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])
    cols = [padded[..., dy:dy + h, :] for dy in range(5)]
    for i, j in _SORT5:
        _compare_exchange(cols, i, j)

    def row(rank):  # the 5 values of that rank in the 5 columns of each window
        return [cols[rank][..., dx:dx + w] for dx in range(5)]

    candidates = (
        _drop_min(_drop_min(_drop_min(row(0))))  # 2 largest of rank-0 row
        + _drop_min(_drop_min(row(1)))  # 3 largest
        + _drop_max(_drop_min(row(2)))  # 3 middle
        + _drop_max(_drop_max(row(3)))  # 3 smallest
        + _drop_max(_drop_max(_drop_max(row(4))))  # 2 smallest
    )
    return _median_by_forgetful_selection(candidates)


# --- the algorithm -------------------------------------------------------------------


def _one_scale(i0: tf.Tensor, i1: tf.Tensor, flow: tf.Tensor, used: tf.Tensor,
               p: TVL1Params) -> tf.Tensor:
    """DualTVL1 on one pyramid level (OpenCV's ``procOneScale``).

    ``i0``, ``i1`` [N, H, W] float32 in [0, 255]; ``flow`` [N, 2, H, W] float32 px, the
    initial flow; ``used``: bool scalar, False for a level under MIN_LEVEL_SIZE (then
    nothing is done and ``flow`` comes back unchanged).
    """
    shape = tf.shape(i0)
    area = tf.cast(shape[1] * shape[2], tf.float64)
    scaled_eps = tf.cast(p.epsilon * p.epsilon * area, tf.float32)
    l_t = np.float32(p.lambda_ * p.theta)
    taut = np.float32(p.tau / p.theta)
    theta = np.float32(p.theta)
    max_iter = p.outer_iterations * p.inner_iterations
    median = p.median_filtering > 1

    i1x, i1y = _centered_gradient(i1)
    image_and_grad = tf.stack([i1, i1x, i1y], axis=1)  # [N, 3, H, W]
    zeros = tf.zeros_like(flow)
    n_warps = tf.where(used, p.warps, 0)

    def warp_body(k_warp, flow, px, py):
        # px, py [N, 2, H, W]: x and y components of the dual variable of each flow
        # channel (OpenCV's p11, p21 and p12, p22).
        warped = _warp_bicubic(image_and_grad, flow)
        i1w, i1wx, i1wy = warped[:, 0], warped[:, 1], warped[:, 2]
        grad_i = warped[:, 1:]  # [N, 2, H, W]
        grad_sq = i1wx * i1wx + i1wy * i1wy
        rho_c = i1w - i1wx * flow[:, 0] - i1wy * flow[:, 1] - i0
        lt_grad = l_t * grad_sq
        has_grad = grad_sq > FLT_EPSILON
        safe_grad = tf.where(has_grad, grad_sq, tf.ones_like(grad_sq))
        active0 = tf.ones(tf.shape(i0)[:1], dtype=tf.bool)

        def iter_cond(k, active, flow, px, py):
            return (k < max_iter) & tf.reduce_any(active)

        def iter_body(k, active, flow, px, py):
            u = flow
            if median:
                u = tf.cond(k % p.inner_iterations == 0,
                            lambda: _median_filter(flow, p.median_filtering),
                            lambda: flow)
            # Thresholding step (OpenCV's estimateV).
            rho = rho_c + (i1wx * u[:, 0] + i1wy * u[:, 1])
            step = tf.where(
                rho < -lt_grad, l_t,
                tf.where(rho > lt_grad, -l_t,
                         tf.where(has_grad, -rho / safe_grad, 0.0)))
            v = u + step[:, None] * grad_i
            # Primal step (estimateU) and its stopping measure.
            u_new = v + theta * _divergence(px, py)
            change = u_new - u
            error = tf.reduce_sum(tf.square(change), axis=[1, 2, 3])
            # Dual step (estimateDualVariables).
            ux, uy = _forward_gradient(u_new)
            norm = 1.0 + taut * tf.sqrt(ux * ux + uy * uy)
            px_new = (px + taut * ux) / norm
            py_new = (py + taut * uy) / norm
            # Pairs that have already met the stopping test keep their state. The
            # select only runs once some pair has stopped (an extra pass otherwise).
            keep = active[:, None, None, None]
            flow, px, py = tf.cond(
                tf.reduce_all(active),
                lambda: (u_new, px_new, py_new),
                lambda: (tf.where(keep, u_new, flow), tf.where(keep, px_new, px),
                         tf.where(keep, py_new, py)))
            active = active & (error > scaled_eps)
            return k + 1, active, flow, px, py

        _, _, flow, px, py = tf.while_loop(
            iter_cond, iter_body, (tf.constant(0), active0, flow, px, py))
        return k_warp + 1, flow, px, py

    _, flow, _, _ = tf.while_loop(
        lambda k, *_: k < n_warps, warp_body, (tf.constant(0), flow, zeros, zeros))
    return flow


def _level_size(n: tf.Tensor, scale_step: float) -> tf.Tensor:
    """``cvRound(n * scale_step)``: the size cv::resize gives for a scale factor."""
    return tf.cast(tf.floor(tf.cast(n, tf.float64) * scale_step + 0.5), tf.int32)


def _tvl1_graph(prev: tf.Tensor, nxt: tf.Tensor, p: TVL1Params) -> tf.Tensor:
    """Flow [N, H, W, 2] float32 px from uint8 [N, H, W] frame pairs."""
    i0s = [tf.cast(prev, tf.float32)]
    i1s = [tf.cast(nxt, tf.float32)]
    used = [tf.constant(True)]
    inv_step = 1.0 / p.scale_step
    for _ in range(1, p.nscales):
        shape = tf.shape(i0s[-1])
        h = _level_size(shape[1], p.scale_step)
        w = _level_size(shape[2], p.scale_step)
        i0s.append(_resize_bilinear(i0s[-1], h, w, inv_step, inv_step))
        i1s.append(_resize_bilinear(i1s[-1], h, w, inv_step, inv_step))
        used.append(used[-1] & (h >= MIN_LEVEL_SIZE) & (w >= MIN_LEVEL_SIZE))

    coarse = tf.shape(i0s[-1])
    flow = tf.zeros(tf.stack([coarse[0], 2, coarse[1], coarse[2]]), tf.float32)
    for s in range(p.nscales - 1, -1, -1):
        if s < p.nscales - 1:
            # Carry the flow up one level: bilinear resize, then scale the vectors.
            src = tf.shape(flow)[2:]
            dst = tf.shape(i0s[s])[1:]
            scale_y = 1.0 / (tf.cast(dst[0], tf.float64) / tf.cast(src[0], tf.float64))
            scale_x = 1.0 / (tf.cast(dst[1], tf.float64) / tf.cast(src[1], tf.float64))
            flow = _resize_bilinear(flow, dst[0], dst[1], scale_y, scale_x)
            flow = flow * np.float32(inv_step)
        flow = _one_scale(i0s[s], i1s[s], flow, used[s], p)
    return tf.transpose(flow, [0, 2, 3, 1])


_FRAME_SPEC = tf.TensorSpec([None, None, None], tf.uint8)
_compiled: dict[tuple[TVL1Params, bool], Any] = {}


def tvl1_graph_function(params: TVL1Params = DEFAULT_PARAMS, jit_compile: bool = True):
    """The ``tf.function`` for ``params``: (prev, nxt) uint8 [N, H, W] -> [N, H, W, 2].

    Its input signature leaves N, H and W dynamic, so it traces once per parameter set;
    with ``jit_compile`` XLA still compiles once per concrete input shape.
    """
    key = (params, bool(jit_compile))
    if key not in _compiled:
        _compiled[key] = tf.function(
            lambda prev, nxt: _tvl1_graph(prev, nxt, params),
            input_signature=[_FRAME_SPEC, _FRAME_SPEC],
            jit_compile=bool(jit_compile),
        )
    return _compiled[key]


def _as_frames(x: Any, name: str) -> np.ndarray | tf.Tensor:
    if isinstance(x, (tf.Tensor, tf.Variable)):
        return x
    if isinstance(x, np.ndarray):
        return x
    raise InvalidFlowInput(
        f"{name} must be a numpy array or tf.Tensor of uint8 frames [N, H, W], "
        f"got {type(x).__name__}"
    )


def _check_frames(prev: Any, nxt: Any):
    prev = _as_frames(prev, "prev")
    nxt = _as_frames(nxt, "nxt")
    for name, x in (("prev", prev), ("nxt", nxt)):
        dtype = x.dtype if isinstance(x, np.ndarray) else x.dtype.as_numpy_dtype
        if dtype != np.uint8:
            raise InvalidFlowInput(
                f"{name} must be uint8 grayscale frames [N, H, W], got dtype "
                f"{np.dtype(dtype).name}"
            )
        if len(x.shape) != 3:
            raise InvalidFlowInput(
                f"{name} must have rank 3 [N, H, W] (a batch of grayscale frames), got "
                f"shape {list(x.shape)}"
            )
    if tuple(prev.shape) != tuple(nxt.shape):
        raise InvalidFlowInput(
            f"prev and nxt must have the same shape [N, H, W], got {list(prev.shape)} "
            f"and {list(nxt.shape)}"
        )
    _, h, w = prev.shape
    if h < MIN_FRAME_SIZE or w < MIN_FRAME_SIZE:
        raise InvalidFlowInput(
            f"frames must be at least {MIN_FRAME_SIZE}x{MIN_FRAME_SIZE} px, got {h}x{w}"
        )
    return prev, nxt


def tvl1_flow_tf(
    prev: Any,
    nxt: Any,
    *,
    batch_pairs: int | None = None,
    params: TVL1Params = DEFAULT_PARAMS,
    jit_compile: bool = True,
) -> np.ndarray:
    """TV-L1 optical flow from ``prev[k]`` to ``nxt[k]`` for every pair k, as OpenCV's.

    Args:
      prev, nxt: uint8 grayscale frames ``[N, H, W]`` (numpy or tf), H, W >= 16; pair k
        is ``(prev[k], nxt[k])``. For a clip ``frames`` ``[T, H, W]`` pass
        ``frames[:-1], frames[1:]``.
      batch_pairs: pairs per call of the TensorFlow graph (memory bound: the graph
        holds about 20 full-size float32 planes per pair, see docs/flow.md); ``None`` = all
        N at once. Results do not depend on it.
      params: the DualTVL1 parameters; the default is OpenCV's defaults.
      jit_compile: compile the graph with XLA (default). XLA fuses the elementwise
        work of each iteration and is 2-4x faster on CPU; it compiles once per
        distinct chunk shape (about 10-15 s on 2 CPU cores). The last, shorter chunk
        is padded to ``batch_pairs`` so that a clip costs one compilation. False runs
        the same graph op by op (traced once for all shapes).

    Returns:
      float32 ``[N, H, W, 2]``: flow in pixels, channel 0 = x (right), 1 = y (down).

    Raises:
      InvalidFlowInput: wrong type, dtype, rank, mismatched shapes or frames < 16 px.
    """
    prev, nxt = _check_frames(prev, nxt)
    n, h, w = (int(d) for d in prev.shape)
    if batch_pairs is not None and (not isinstance(batch_pairs, (int, np.integer))
                                    or batch_pairs < 1):
        raise InvalidFlowInput(f"batch_pairs must be a positive int or None, got "
                               f"{batch_pairs!r}")
    if n == 0:
        return np.zeros((0, h, w, 2), np.float32)
    chunk = n if batch_pairs is None else min(int(batch_pairs), n)
    fn = tvl1_graph_function(params, jit_compile)
    prev = tf.convert_to_tensor(prev)
    nxt = tf.convert_to_tensor(nxt)
    out = []
    for start in range(0, n, chunk):
        a, b = prev[start:start + chunk], nxt[start:start + chunk]
        short = chunk - int(a.shape[0])
        if short and jit_compile:
            # Keep one shape per chunk size, so XLA compiles once: repeat the last
            # pair (pairs are independent; the copies are dropped).
            a = tf.concat([a] + [a[-1:]] * short, axis=0)
            b = tf.concat([b] + [b[-1:]] * short, axis=0)
        out.append(fn(a, b).numpy()[:chunk - short])
    return out[0] if len(out) == 1 else np.concatenate(out, axis=0)


def default_batch_pairs() -> int:
    """Pairs per batch when the caller does not say: 64 where TensorFlow sees a GPU
    (fills it; about 1.6 GB at 256x340), 4 on a CPU (64 pairs' state leaves the caches
    and runs slower per pair; see benchmarks/README.md)."""
    return 64 if tf.config.list_physical_devices("GPU") else 4


def tvl1_flow_backend(prev: Any, nxt: Any, *, batch_pairs: int | None = None) -> np.ndarray:
    """The ``tf`` backend of :mod:`beam_i3d.media.flow`: :func:`tvl1_flow_tf` with OpenCV's
    parameters, XLA, and ``batch_pairs`` defaulting to :func:`default_batch_pairs`."""
    return tvl1_flow_tf(prev, nxt, batch_pairs=batch_pairs or default_batch_pairs())
