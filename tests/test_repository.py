"""The project's own rules (docs/architecture.md §2): import boundaries, lint, and the two
README commands."""

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
    "server": {"torch", "clients", "training", "export", "synth"},
    "clients": {"torch", "server", "training", "export", "synth"},
    "synth": {"torch", "training", "export", "server", "clients"},
}
# The exceptions, each in one file: the server's demo scene and the clients' synthetic source
# render with synth. Both load it only when used (server.app imports server.demo inside the
# function that starts the demo; sources.synth imports synth in its body), which
# test_serving_and_streaming_load_synth_only_when_asked checks.
ALLOWED = {
    "server/demo.py": {"synth"},
    "clients/sources.py": {"synth"},
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
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if wrong := imported_modules(path) & FORBIDDEN[package] - ALLOWED.get(name, set()):
            bad.append(f"{name} imports {sorted(wrong)}")
    assert not bad, "\n".join(bad)


@pytest.mark.slow
def test_serving_and_streaming_load_synth_only_when_asked():
    """Every module of server and clients (but server.demo, the demo itself) imports without
    loading synth or torch: the allowed synth imports stay lazy."""
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in ("server", "clients")
        for path in sorted((ROOT / package).rglob("*.py"))
    ]
    modules.remove("server.demo")
    code = (
        "import importlib, sys\n"
        "for m in sys.argv[1:]: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('synth', 'torch')))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, *modules], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def imports_of_tests(path: Path) -> list[str]:
    """The test modules and conftest files that `path` imports (helpers belong in tests/helpers
    or in conftest fixtures, where every test module finds them)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "tests" and any(p.startswith("test_") or p == "conftest" for p in parts):
                found.append(name)
    return found


@pytest.mark.slow  # parses every test module: 0.8 CPU s
def test_test_modules_share_helpers_not_each_other():
    bad = [
        f"{path.relative_to(ROOT)} imports {imports_of_tests(path)}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if imports_of_tests(path)
    ]
    assert not bad, "\n".join(bad)


def test_test_import_checker_sees_imports_of_tests(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from tests.server.test_stream import FRAMES\nfrom tests.server import conftest\n"
        "import tests.core.test_clip\nfrom tests.helpers.live import TOKEN\n"
    )
    assert imports_of_tests(probe) == [
        "tests.server.test_stream",
        "tests.server.test_stream.FRAMES",
        "tests.server.conftest",
        "tests.core.test_clip",
    ]


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
    assert "make test\n" in ci and "make test-threads\n" in ci
