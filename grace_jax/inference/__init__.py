"""Trained models on people's videos: `Predictor` (grace_jax/inference/predictor.py) and its results."""

from grace_jax.inference.predictor import Predictor
from grace_jax.inference.results import TrackResult, VideoResult, WindowResult

__all__ = ["Predictor", "TrackResult", "VideoResult", "WindowResult"]
