"""crop_clip: a clip's sampled frames -> face crops, frames left as they are, or "no face"."""

import numpy as np
import pytest
from face_scenes import paste_face, reference, scene
from PIL import Image

from grace_jax.faces.clip_crop import crop_clip


def _clip(rng, n, with_face):
    frames = []
    for t in range(n):
        frame = scene(rng, 270, 480)
        if with_face:
            frame, _ = paste_face(frame, 60 + 10 * t, 40, 130)  # face box ~71 px, off-centre
        frames.append(frame)
    return np.stack(frames)


def test_faceless_clip_is_reported_not_classified(detector):
    frames = _clip(np.random.default_rng(1), 6, with_face=False)
    result = crop_clip(frames, detector, size=96)
    assert result.no_face and not result.cropped and result.face_fraction == 0.0
    assert "no face" in result.reason and "0/6" in result.reason
    assert result.frames is frames
    # min_face_fraction=0 classifies anyway; there is nothing to crop to.
    anyway = crop_clip(frames, detector, size=96, min_face_fraction=0)
    assert not anyway.no_face and not anyway.cropped


def test_off_centre_face_is_cropped_to_a_centred_face(detector):
    frames = _clip(np.random.default_rng(2), 6, with_face=True)
    result = crop_clip(frames, detector, size=160, margin=0.2)
    assert result.cropped and not result.no_face and result.face_fraction == 1.0
    assert result.frames.shape == (6, 160, 160, 3) and result.frames.dtype == np.uint8
    # In the crops the face is centred and fills 1/(1 + 2 * 0.2) of the side.
    for det in detector.detect(result.frames):
        assert len(det) == 1
        box = det.boxes[0]
        assert np.abs((box[:2] + box[2:]) / 2 - 80).max() < 8, box
        assert abs((box[2] - box[0]) / 160 - 1 / 1.4) < 0.06, box
    none = crop_clip(frames, detector, size=160, face_crop="none")
    assert not none.cropped and none.face_fraction == 1.0 and none.frames is frames


def test_frames_that_are_face_crops_already_are_left_alone(detector):
    ref = reference()
    x0, y0, x1, y1 = ref["face_box"]
    pad = 0.15 * (x1 - x0)
    face = Image.fromarray(ref["face"]).crop((x0 - pad, y0 - pad, x1 + pad, y1 + pad))
    frames = np.stack([np.asarray(face.resize((112, 112), Image.BILINEAR))] * 4)
    result = crop_clip(frames, detector, size=224)
    assert not result.cropped and not result.no_face and result.face_fraction == 1.0
    assert "fills the frame" in result.reason
    assert result.frames is frames


def test_unknown_mode_is_refused(detector):
    with pytest.raises(ValueError, match="face_crop"):
        crop_clip(np.zeros((1, 8, 8, 3), np.uint8), detector, size=8, face_crop="always")
