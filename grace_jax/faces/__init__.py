"""Faces in people's own videos: detect (BlazeFace full-range in JAX), follow and crop them.

    from grace_jax import faces
    detector = faces.FaceDetector()
    result = faces.crop_clip(frames, detector, size=224, face_crop="auto")   # all of it, or:
    track = faces.track_face(detector.detect(frames), frames.shape[1:3])
    crops = faces.crop_frames(frames, track.squares, 224)
    # every face of a whole video, over detection frames sampled at a few fps:
    tracks, notes = faces.track_video_faces(detector.detect(frames), frame_indices, times, (H, W),
                                            cuts=faces.shot_cuts(frames))

The weights ship with the package (blazeface_full_range.npz, MediaPipe's, Apache-2.0: see NOTICE).
"""

from grace_jax.faces.clip_crop import WHOLE_FRAME_SIDE, ClipFaces, crop_clip, frames_for_model
from grace_jax.faces.detector import Detections, FaceDetector, Letterbox, letterbox
from grace_jax.faces.track import FaceTrack, crop_frames, faces_fill_frame, track_face
from grace_jax.faces.tracks import VideoTrack, shot_cuts, track_video_faces

__all__ = [
    "WHOLE_FRAME_SIDE",
    "ClipFaces",
    "Detections",
    "FaceDetector",
    "FaceTrack",
    "Letterbox",
    "crop_clip",
    "crop_frames",
    "faces_fill_frame",
    "frames_for_model",
    "letterbox",
    "VideoTrack",
    "shot_cuts",
    "track_face",
    "track_video_faces",
]
