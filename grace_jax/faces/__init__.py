"""Face detection (BlazeFace full-range, in JAX), tracking and cropping."""
