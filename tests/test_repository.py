"""The project's own rules (design.md §2): import boundaries, lint, and the two README commands."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"core", "synth", "training", "export", "server", "clients"}
# package -> top-level modules it must never import
FORBIDDEN = {
    "core": OURS - {"core"} | {"torch"},
    "server": {"torch", "clients", "training", "export"},
    "clients": {"torch", "server", "training", "export"},
    "synth": {"torch", "training", "export", "server", "clients"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_rules(package):
    bad = [
        f"{path.relative_to(ROOT)} imports {sorted(imported_modules(path) & FORBIDDEN[package])}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported_modules(path) & FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)


def test_import_rule_checker_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import torch.nn as nn\nfrom server.app import x\nfrom . import local\n")
    assert imported_modules(probe) == {"torch", "server"}


def test_ruff_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_commands_and_ci():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
