"""The export tests' shared fixture: one CLI export for the whole run (tests/export/__init__.py)."""

import pytest

from tests.helpers.export_models import exported


@pytest.fixture(scope="session")
def made(tmp_path_factory):
    """(checkpoint, cache, bundle) of one `gd-export onnx` run; tests that use it are slow."""
    return exported(tmp_path_factory.getbasetemp() / "shared-export")
