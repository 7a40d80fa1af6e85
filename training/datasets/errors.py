"""The error every dataset reader raises for a malformed file or folder."""

from __future__ import annotations

from core.splits import FileFormatError


class DatasetFormatError(FileFormatError):
    """A dataset file is malformed or inconsistent; the message names the file and line."""
