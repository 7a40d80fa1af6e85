"""The FastAPI detection service (no torch)."""
