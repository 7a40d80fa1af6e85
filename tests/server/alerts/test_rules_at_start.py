"""gd-serve refuses to start on a malformed alert rules file, naming the file and the line:
the exit status and message its operator sees (the rules' own checks: test_rules.py)."""

from __future__ import annotations

import re

from server.cli import main
from server.events.webhooks import new_secret

SECRET = new_secret()
RULES = f"""\
destinations:
  nurses:
    url: http://127.0.0.1:9/hook
    secrets: ["{SECRET}"]
rules:
  - name: falls
    labels: [large]
    min_confidence: 0.6
    destinations: [nurses]
    cameras:
      bed-3:
        min_confidence: 0.8
"""


def start(tiny_bundle, tmp_path, rules: str, capsys) -> tuple[int, str]:
    path = tmp_path / "alerts.yaml"
    path.write_text(rules)
    argv = ["--model", str(tiny_bundle.root), "--no-auth", "--alert-rules", str(path),
            "--data-dir", str(tmp_path / "data")]  # fmt: skip
    return main(argv), capsys.readouterr().err


def line_of(text: str, fragment: str) -> int:
    (line,) = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    return line


def test_the_valid_file_is_the_baseline(tiny_bundle, tmp_path):
    from server.events.rules import AlertRules

    path = tmp_path / "alerts.yaml"
    path.write_text(RULES)
    assert AlertRules.load(path, tiny_bundle.classes[1:]).spec.rules[0].name == "falls"


def test_malformed_rules_are_refused_at_start_naming_the_line(tiny_bundle, tmp_path, capsys):
    path = tmp_path / "alerts.yaml"
    cases = [
        # a label the model lacks, with the model's closest one
        (RULES.replace("[large]", "[larg]"), "[larg]",
         "rule 'falls': labels[0] 'larg' is not a label of the model; did you mean 'large'?"),
        # a value out of range, at its camera
        (RULES.replace("0.8", "1.5"), "1.5",
         "rule 'falls': cameras.bed-3.min_confidence must be"),
        # a destination the file does not define
        (RULES.replace("[nurses]", "[nurse]"), "[nurse]",
         "rule 'falls': destinations[0] unknown destination 'nurse' (known: nurses)"),
    ]  # fmt: skip
    for text, fragment, message in cases:
        code, err = start(tiny_bundle, tmp_path, text, capsys)
        assert code == 2, err
        assert err.startswith("gd-serve: invalid alert rules:\n"), err
        assert f"{path}:{line_of(text, fragment)}: {message}" in err
    broken = RULES.replace("labels: [large]", "labels: [large")
    code, err = start(tiny_bundle, tmp_path, broken, capsys)
    assert code == 2 and re.search(rf"gd-serve: {re.escape(str(path))}:\d+: not valid YAML", err)
    assert not (tmp_path / "data" / "events.db").exists()  # refused before the store opens
