"""Numpy-only contracts shared by every part: clip spec, preprocessing, post-processing, metrics."""
