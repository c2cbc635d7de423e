"""Anchors, box decoding and weighted NMS."""

import numpy as np

from grace_jax.faces import decode


def test_anchor_grid_is_row_major_cell_centres():
    a = decode.anchor_centres()
    assert a.shape == (2304, 2)
    np.testing.assert_allclose(a[0], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(a[1], [1.5 / 48, 0.5 / 48])  # x runs fastest
    np.testing.assert_allclose(a[48], [0.5 / 48, 1.5 / 48])
    np.testing.assert_allclose(a[-1], [47.5 / 48, 47.5 / 48])


def test_decode_offsets_centre_and_keypoints_by_anchor():
    reg = np.zeros((1, 2304, 16), np.float32)
    k = 48 * 10 + 20  # row 10, column 20: centre (20.5/48, 10.5/48)
    reg[0, k, :4] = [9.6, -19.2, 48.0, 24.0]  # px of the 192 input
    reg[0, k, 4:6] = [1.92, 3.84]
    logits = np.full((1, 2304), -200.0, np.float32)
    logits[0, k] = 0.0
    logits[0, 1], logits[0, 2] = np.inf, -np.inf  # clipped to +-100 first, as MediaPipe does
    boxes, keypoints, scores = (np.asarray(a) for a in decode.decode(reg, logits))
    cx, cy = 20.5 / 48 + 0.05, 10.5 / 48 - 0.1
    np.testing.assert_allclose(boxes[0, k], [cx - 0.125, cy - 0.0625, cx + 0.125, cy + 0.0625], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, k, 0], [20.5 / 48 + 0.01, 10.5 / 48 + 0.02], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, k, 1], decode.anchor_centres()[k], atol=1e-6)
    assert scores[0, k] == 0.5
    assert scores[0, 1] == 1.0 and 0 <= scores[0, 2] < 1e-40 and np.isfinite(scores).all()


def test_weighted_nms_merges_overlaps_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    keypoints = np.arange(4 * 12, dtype=np.float32).reshape(4, 6, 2)
    scores = np.array([0.9, 0.7, 0.8, 0.5], np.float32)  # the last is under the threshold
    b, kp, s = decode.weighted_nms(boxes, keypoints, scores)
    np.testing.assert_allclose(s, [0.9, 0.8])  # best first, each group keeps its best score
    w = np.array([0.9, 0.7]) / 1.6
    np.testing.assert_allclose(b[0], w @ boxes[:2], rtol=1e-6)
    np.testing.assert_allclose(kp[0], np.tensordot(w, keypoints[:2], 1), rtol=1e-6)
    np.testing.assert_allclose(b[1], boxes[2])


def test_weighted_nms_keeps_boxes_at_iou_threshold_apart():
    # IoU of 10x10 boxes shifted by d: (10-d)/(10+d). d=5: 1/3 > 0.3, merged; d=6: 0.25, not.
    for shift, kept in ((5, 1), (6, 2)):
        boxes = np.array([[0, 0, 10, 10], [shift, 0, 10 + shift, 10]], np.float32)
        b, _, s = decode.weighted_nms(boxes, np.zeros((2, 6, 2), np.float32), np.array([0.9, 0.8], np.float32))
        assert len(s) == kept, (shift, b)


def test_weighted_nms_drops_degenerate_and_empty():
    boxes = np.array([[5, 5, 5, 9], [0, 0, 4, 4]], np.float32)
    b, kp, s = decode.weighted_nms(boxes, np.zeros((2, 6, 2), np.float32), np.array([0.99, 0.7], np.float32))
    np.testing.assert_allclose(b, boxes[1:])
    b, kp, s = decode.weighted_nms(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0))
    assert b.shape == (0, 4) and kp.shape == (0, 6, 2) and s.shape == (0,)
