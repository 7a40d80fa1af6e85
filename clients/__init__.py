"""Streamers, uploader and Python client for the detection service (no torch)."""
