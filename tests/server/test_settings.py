"""server.settings: environment, tokens, and the refusal to run open."""

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
        ({"GD_PORT": "eighty"}, "GD_PORT must be a int"),
        ({"GD_NO_AUTH": "maybe"}, "GD_NO_AUTH must be a bool"),
        ({"GD_DEVICE": "tpu"}, "device must be one of"),
        ({"GD_MAX_BATCH": "0"}, "max_batch must be >= 1"),
        ({"GD_TOKENS": "has space"}, "whitespace"),
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
