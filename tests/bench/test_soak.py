"""bench/soak.py end to end, for a few seconds on the tiny model: it starts gd-serve, streams,
sends hostile input, and reports. (The 30-minute soak is run by hand: docs/security.md.)"""

import pytest


@pytest.mark.slow
def test_a_short_soak_runs_and_reports(tmp_path, monkeypatch, capsys):
    from bench import soak
    from tests.fuzz import corpus
    from tests.helpers.tiny_bundle import make_bundle

    bundle = make_bundle(tmp_path / "tiny")
    plot = tmp_path / "soak.png"
    # short server timeouts, so that hostile recordings and idle streams end in the run (the
    # server inherits this process's environment), and its event store in tmp_path, not the
    # checkout's data/ (which `make run` shows)
    monkeypatch.setenv("GD_DECODE_TIMEOUT_S", "1")
    monkeypatch.setenv("GD_IDLE_TIMEOUT_S", "2")
    monkeypatch.setenv("GD_DATA_DIR", str(tmp_path))
    # a short run at high hostile rates: its hostile phase still sends every corpus upload and
    # every kind of hostile stream
    minutes, rate = 0.1, 200.0  # rate: hostile uploads, and hostile streams, a minute
    hostile_s = dict(soak.PHASES)["hostile"] * 60 * minutes
    assert hostile_s * rate / 60 > max(len(corpus.CASES), len(soak.hostile_streams(bundle.clip)))
    argv = ["--minutes", str(minutes), "--streams", "2", "--model", str(bundle.root),
            "--uploads-per-minute", str(rate), "--streams-per-minute", str(rate),
            "--plot", str(plot)]  # fmt: skip
    code = soak.main(argv)  # in this process (gd-serve is its subprocess): no second interpreter
    out = capsys.readouterr().out
    assert code == 0, out
    for line in ("memory, server:", "healthy:", "hostile uploads by status:", "failures"):
        assert line in out, out
    assert "failures (5xx, undocumented closes, server gone): 0" in out
    assert plot.stat().st_size > 0
