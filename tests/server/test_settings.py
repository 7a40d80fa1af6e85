"""server.settings: the sources and their precedence, errors that name the setting, tokens,
and the refusal to run open."""

import dataclasses
from pathlib import Path

import pytest

from server.settings import Settings, SettingsError, from_env, is_loopback


def test_environment_fills_settings_and_overrides_win():
    env = {
        "GD_MODEL": "/models/x",
        "GD_PORT": "9000",
        "GD_NO_AUTH": "true",
        "GD_TOKENS": "a, b ,",
        "GD_MAX_WAIT_MS": "2.5",
        "GD_CORS_ORIGINS": "https://a.example",
        "UNRELATED": "1",
    }
    s = from_env(env, port=9100, host=None)
    assert s.model == Path("/models/x") and s.port == 9100 and s.host == "127.0.0.1"
    assert s.no_auth is True and s.tokens == ("a", "b") and s.max_wait_ms == 2.5
    assert s.cors_origins == ("https://a.example",)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"GD_PORT": "eighty"}, "^GD_PORT must be an integer, got 'eighty'$"),
        ({"GD_NO_AUTH": "maybe"}, "^GD_NO_AUTH must be a boolean .*, got 'maybe'$"),
        ({"GD_DEVICE": "tpu"}, "^GD_DEVICE must be one of 'auto', 'cpu', 'cuda' or 'tensorrt'"),
        ({"GD_MAX_BATCH": "0"}, "^GD_MAX_BATCH must be >= 1, got '0'$"),
        ({"GD_MAX_WAIT_MS": "-1"}, "^GD_MAX_WAIT_MS must be positive, got '-1'$"),
        ({"GD_SCORE_DELAY": "soon"}, "^GD_SCORE_DELAY must be an integer"),
        ({"GD_LOG_LEVEL": "loud"}, "^GD_LOG_LEVEL must be one of"),
        ({"GD_TOKENS": "has space"}, "^GD_TOKENS must be non-empty and contain no whitespace$"),
    ],
)
def test_bad_environment(env, match):
    with pytest.raises(SettingsError, match=match):
        from_env(env)


def test_tokens_file(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# ops team\nalpha\n\n  beta  \n")
    assert Settings(tokens_file=f, tokens=("x",)).check_auth() == ("x", "alpha", "beta")
    f.write_text("two words\n")
    with pytest.raises(SettingsError, match="whitespace"):
        Settings(tokens_file=f).check_auth()
    with pytest.raises(SettingsError, match="cannot read tokens file"):
        Settings(tokens_file=tmp_path / "missing").check_auth()


def test_no_tokens_refuses_to_start():
    with pytest.raises(SettingsError, match="no API tokens"):
        Settings().check_auth()


def test_no_auth_only_on_loopback():
    assert Settings(no_auth=True, host="127.0.0.1").check_auth() == ()
    assert Settings(no_auth=True, host="::1").check_auth() == ()
    assert Settings(no_auth=True, host="localhost").check_auth() == ()
    for host in ("0.0.0.0", "192.168.1.5", "example.com"):
        with pytest.raises(SettingsError, match="only on a loopback bind"):
            Settings(no_auth=True, host=host).check_auth()


def test_is_loopback():
    assert is_loopback("127.0.0.2") and not is_loopback("::") and not is_loopback("10.0.0.1")


def test_tokens_are_not_in_the_repr():
    assert "sekrit" not in repr(Settings(tokens=("sekrit",)))


def test_every_bad_value_is_named_in_one_message():
    with pytest.raises(SettingsError) as e:
        from_env({"GD_PORT": "x"}, max_batch="0")
    assert str(e.value) == "GD_PORT must be an integer, got 'x'; --max-batch must be >= 1, got '0'"


def test_a_bad_token_is_never_echoed():
    with pytest.raises(SettingsError) as e:
        from_env({"GD_TOKENS": "good,sekrit value"})
    assert "sekrit" not in str(e.value)


def test_direct_values_are_checked_too():
    with pytest.raises(SettingsError, match="^port must be <= 65535, got 70000$"):
        Settings(port=70000)
    with pytest.raises(SettingsError, match="^colour is not a setting"):
        Settings(colour="red")
    with pytest.raises(SettingsError, match="^max_streams must be >= 1, got 0$"):
        dataclasses.replace(Settings(), max_streams=0)


def test_settings_read_nothing_but_their_arguments(monkeypatch):
    monkeypatch.setenv("GD_PORT", "9000")
    assert Settings().port == 8000 and from_env().port == 9000


def test_precedence_flags_environment_file_defaults(tmp_path):
    config = tmp_path / "gd.toml"
    config.write_text('port = 7000\nmax_streams = 3\ntop_k = 2\ntokens = ["a", "b"]\n')
    env = {"GD_CONFIG": str(config), "GD_PORT": "7100", "GD_MAX_STREAMS": "4"}
    s = from_env(env, port=7200)
    assert (s.port, s.max_streams, s.top_k, s.max_batch) == (7200, 4, 2, Settings().max_batch)
    assert s.tokens == ("a", "b")  # a TOML array
    other = tmp_path / "other.toml"
    other.write_text("top_k = 9\n")
    assert from_env(env, config=other).top_k == 9  # --config wins over GD_CONFIG


def test_an_empty_variable_counts_as_unset(tmp_path):
    config = tmp_path / "gd.toml"
    config.write_text("score_delay = 1\n")
    env = {"GD_CONFIG": str(config), "GD_SCORE_DELAY": "", "GD_TOKENS_FILE": ""}
    s = from_env(env)
    assert s.score_delay == 1 and s.tokens_file is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('port = "eighty"\n', "gd.toml: port must be an integer, got 'eighty'$"),
        ("colour = 1\n", "gd.toml: colour is not a setting, got 1$"),
        ("port = \n", "^config file .*gd.toml: Invalid value"),
    ],
)
def test_bad_config_file(tmp_path, text, match):
    config = tmp_path / "gd.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=match):
        from_env({"GD_CONFIG": str(config)})


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError, match="missing.toml: no such file"):
        from_env({}, config=tmp_path / "missing.toml")
