"""From BlazeFace's raw outputs to face boxes: anchors, box decoding, weighted non-max suppression.

The post-processing MediaPipe configures for the full-range model (read from the FaceDetection
graph compiled into mediapipe 0.10.21's wheel): one anchor per cell of the 48x48 grid (stride 4,
one aspect ratio, fixed anchor size 1, centre offset 0.5); regressors in (x, y, w, h) order, scaled
by 1/192 and, for the centre and the 6 keypoints, offset by the anchor centre; score =
sigmoid(clip(logit, -100, 100)), kept when >= 0.6; weighted NMS with IoU threshold 0.3 (a kept box
is the score-weighted mean of every box that overlaps the best remaining one by more than 0.3, with
the best one's score).

Coordinates here are normalized to the 192x192 network input (0..1); `grace_jax.faces.detector`
maps them back to frame pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from grace_jax.faces.blazeface import GRID, INPUT_SIZE, NUM_ANCHORS

SCORE_THRESHOLD = 0.6
IOU_THRESHOLD = 0.3
LOGIT_CLIP = 100.0
NUM_KEYPOINTS = 6  # right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion


def anchor_centres() -> np.ndarray:
    """[2304, 2] float32 (x, y) cell centres in 0..1, row-major like the network's outputs."""
    y, x = np.divmod(np.arange(NUM_ANCHORS), GRID)
    return np.stack([(x + 0.5) / GRID, (y + 0.5) / GRID], -1).astype(np.float32)


def decode(regressors: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Raw [B,2304,16], [B,2304] -> boxes [B,2304,4], keypoints [B,2304,6,2], scores [B,2304].

    Boxes are (x0, y0, x1, y1) and keypoints (x, y), normalized to the network input.
    """
    anchors = jnp.asarray(anchor_centres())
    r = regressors / INPUT_SIZE
    centre = r[..., 0:2] + anchors
    half = r[..., 2:4] / 2
    boxes = jnp.concatenate([centre - half, centre + half], -1)
    keypoints = r[..., 4:].reshape(*r.shape[:-1], NUM_KEYPOINTS, 2) + anchors[:, None, :]
    scores = jax.nn.sigmoid(jnp.clip(logits, -LOGIT_CLIP, LOGIT_CLIP))
    return boxes, keypoints, scores


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x0, y0, x1, y1) box [4] with each of boxes [N,4] -> [N]."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame's candidates [N,4], [N,6,2], [N] -> the faces, best first: [M,4], [M,6,2], [M].

    Candidates under `score_threshold` or with a non-positive width or height are dropped first.
    """
    keep = (scores >= score_threshold) & np.all(boxes[:, 2:] > boxes[:, :2], axis=1)
    boxes, keypoints, scores = boxes[keep], keypoints[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out_boxes, out_keypoints, out_scores = [], [], []
    while len(scores):
        overlap = iou(boxes[0], boxes) > iou_threshold
        overlap[0] = True  # a box always merges with itself (even a degenerate one)
        w = scores[overlap] / scores[overlap].sum()
        out_boxes.append(w @ boxes[overlap])
        out_keypoints.append(np.tensordot(w, keypoints[overlap], axes=1))
        out_scores.append(scores[0])
        boxes, keypoints, scores = boxes[~overlap], keypoints[~overlap], scores[~overlap]
    return (
        np.asarray(out_boxes, np.float32).reshape(-1, 4),
        np.asarray(out_keypoints, np.float32).reshape(-1, NUM_KEYPOINTS, 2),
        np.asarray(out_scores, np.float32),
    )
