"""Predicting on people's own videos: per-window results, pictures and timelines of them."""
