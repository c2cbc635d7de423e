"""Pieces of the grain input pipeline: segment sampling and per-clip transforms."""
