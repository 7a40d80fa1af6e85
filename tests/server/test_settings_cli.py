"""gd-serve's settings: a flag for each, its help, the config file, and one-line errors."""

import dataclasses
import subprocess
import sys

import pytest

from server.cli import NO_FLAG, main, parse_args
from server.settings import Settings, flag


def test_help_lists_every_setting_with_its_variable_and_default(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse's line breaks undone
    for f in dataclasses.fields(Settings):
        if f.name in NO_FLAG:
            assert f"GD_{f.name.upper()}: " in text
        else:
            assert f" {flag(f.name)} " in text and f"(GD_{f.name.upper()}; default: " in text
    assert "(GD_MAX_STREAMS; default: 64)" in text
    assert "(GD_TOKENS_FILE; default: none)" in text
    assert "(GD_NO_AUTH; default: off)" in text
    assert "--device {auto,cpu,cuda,tensorrt}" in text
    assert "(GD_CONFIG; default: none)" in text


def test_a_bad_flag_is_one_line_and_status_2(capsys):
    assert main(["--max-streams", "many"]) == 2
    assert capsys.readouterr().err == "gd-serve: --max-streams must be an integer, got 'many'\n"


def test_a_bad_variable_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setenv("GD_MAX_GAP_S", "0")
    assert main([]) == 2
    assert capsys.readouterr().err == "gd-serve: GD_MAX_GAP_S must be positive, got '0'\n"


def test_the_config_file_reaches_the_server_and_flags_win(tiny_bundle, tmp_path, capsys):
    config = tmp_path / "gd.toml"
    config.write_text(f'model = "{tmp_path / "nothing"}"\nno_auth = true\nscore_delay = 4\n')
    assert main(["--config", str(config)]) == 2
    assert "not a model bundle" in capsys.readouterr().err  # the file's model
    assert main(["--config", str(config), "--model", str(tiny_bundle.root)]) == 2
    # the flag's model, the file's score delay (beyond this model's window)
    assert "score_delay must be in [0, 3] clips" in capsys.readouterr().err


@pytest.mark.slow  # a Python process that imports the server (docs/testing.md)
def test_gd_serve_refuses_a_bad_config_file(tmp_path):
    config = tmp_path / "gd.toml"
    config.write_text("max_streams = 0\n")
    r = subprocess.run(
        [sys.executable, "-m", "server.cli", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr == f"gd-serve: {config}: max_streams must be >= 1, got 0\n"


def test_tokens_have_no_flag_not_even_by_abbreviation():
    """argparse would take `--tokens` for `--tokens-file` and read the token as a path."""
    with pytest.raises(SystemExit) as e:
        parse_args(["--tokens", "secret"])
    assert e.value.code == 2
