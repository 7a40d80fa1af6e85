"""The error every dataset reader raises for a malformed file or folder."""

from __future__ import annotations

import os


class DatasetFormatError(ValueError):
    """A dataset file is malformed or inconsistent; the message names the file and line."""

    def __init__(self, path: str | os.PathLike, reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")
