"""Readers of the inputs data_prep understands: annotation lists, frame folders, video files."""
