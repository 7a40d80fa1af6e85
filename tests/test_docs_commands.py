"""The `gd-*` commands in README.md and docs/*.md shell blocks parse with the real CLIs.

Every fenced `sh`/`bash` block is read, continuation lines joined and comments dropped. Each
`gd-*` command in it (also as `.venv/bin/gd-...`) goes through that tool's own main, found
through pyproject.toml's entry points, stopped right after its argparse parser accepted the
arguments: a renamed or removed flag, a missing required argument or a bad choice in the docs
fails here. A few cheap commands then run for real, as a newcomer would type them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import tomllib
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SEPARATORS = {"&&", "||", "|", ";", "&"}
REDIRECTIONS = {">", ">>", "<", "2>"}  # each followed by a file name


def entry_points() -> dict[str, str]:
    """`gd-train` -> `training.cli:main`, from pyproject.toml."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: target for name, target in scripts.items() if name.startswith("gd-")}


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, tool, arguments) of every gd-* command in a shell block of the docs."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for block in FENCE.finditer(text):
            line_no = text.count("\n", 0, block.start()) + 2
            for line in block.group(1).replace("\\\n", " ").splitlines():
                words = without_redirections(shlex.split(line, comments=True))
                # Each command of a `a && b | c` line on its own.
                start = 0
                for i, word in enumerate([*words, ";"]):
                    if word in SEPARATORS:
                        command, start = words[start:i], i + 1
                        tool = next((w for w in command if Path(w).name.startswith("gd-")), None)
                        if tool is not None:
                            where = f"{path.relative_to(ROOT)}:{line_no}"
                            args = command[command.index(tool) + 1 :]
                            found.append((where, Path(tool).name, args))
                line_no += 1 + line.count("\\\n")
    return found


def without_redirections(words: list[str]) -> list[str]:
    kept, skip = [], False
    for word in words:
        if not skip and word not in REDIRECTIONS and word != "2>&1":
            kept.append(word)
        skip = word in REDIRECTIONS
    return kept


class Parsed(BaseException):
    """Raised right after a tool's parser accepted its arguments: nothing of the tool runs.
    (A BaseException, so that no `except Exception` in a tool swallows it.)"""


def parse(tool: str, args: list[str]) -> str:
    """argparse's complaint about `tool args` ("" when they parse), without running the tool.

    The tool's own main builds its parsers as it always does (subcommands included); its first
    `parse_args` call is stopped right after parsing."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    err = io.StringIO()
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            main_of(tool)(args)
        except Parsed:
            return ""
        except SystemExit as e:
            return err.getvalue().strip().splitlines()[-1] if e.code else ""
    return "the tool returned without parsing its arguments"


def main_of(tool: str):
    module, function = entry_points()[tool].split(":")
    return getattr(importlib.import_module(module), function)


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_kind():
    """The reader found the blocks (a broken pattern would make the next test vacuous)."""
    tools = {tool for _, tool, _ in COMMANDS}
    assert len(COMMANDS) >= 25
    assert {"gd-synth", "gd-prep", "gd-train", "gd-export", "gd-serve", "gd-stream"} <= tools
    assert tools <= set(entry_points()), "a documented gd-* command that is not installed"


@pytest.mark.parametrize(("where", "tool", "args"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_command_parses(where, tool, args):
    assert parse(tool, args) == "", f"{where}: {tool} {shlex.join(args)}"


def test_a_wrong_flag_is_caught():
    """The check can fail: the docs' old `gd-synth ... --root` would."""
    old = ["classification", "--out", "data/ntu", "--samples", "10", "--root", "data/ntu"]
    assert "unrecognized arguments: --root" in parse("gd-synth", old)
    assert "required" in parse("gd-prep", ["--dataset", "pku", "--root", "data/pku"])


@pytest.mark.parametrize("tool", sorted(entry_points()))
def test_every_tool_answers_help(tool, capsys):
    with pytest.raises(SystemExit) as e:
        main_of(tool)(["--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {tool}")


def test_cheap_documented_commands_run(capsys, monkeypatch):
    """What a newcomer runs first, for real (in this process: each tool's main): the config
    the quick pipeline trains with, and the shipped model checked as the server will load it."""
    monkeypatch.chdir(ROOT)
    assert main_of("gd-train")(["show-config", "--preset", "quick"]) == 0
    assert "width: 16" in capsys.readouterr().out
    assert main_of("gd-export")(["verify", "--bundle", "models/default"]) == 0
    assert capsys.readouterr().out.startswith("models/default: ok (default ")
