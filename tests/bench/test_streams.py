"""bench/streams.py --event-path end to end, for a few seconds on the tiny model: it serves
gd-serve without and with the event path (event store, alert rules, a webhook receiver in its
own process), streams, and reports the ratios. (The real measurement is run by hand:
docs/results.md, "The event path's cost".)"""

import json
import re

import pytest


@pytest.mark.slow
def test_the_event_path_mode_serves_both_arms_and_reports(tmp_path, capsys):
    from bench import streams
    from tests.helpers.tiny_bundle import make_bundle

    bundle = make_bundle(tmp_path / "tiny")
    # in this process (the servers and the receiver are its subprocesses): no second interpreter
    code = streams.main(
        ["--event-path", "--model", str(bundle.root), "--rounds", "1", "--counts", "2",
         "--cost-streams", "2", "--seconds", "1", "--warmup", "0.5", "--store-calls", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split() for line in out.splitlines() if line.startswith("events-")]
    # each arm: the fixed-count step only (the grid is that count: no bisection)
    assert [(r[0], r[2]) for r in rows] == [("events-off", "2"), ("events-on", "2")]
    found = re.search(r"(\d+) events stored; deliveries by state (\{.*\}); .* (\{.*\})$", out, re.M)
    assert found, out
    events, states, received = int(found[1]), json.loads(found[2]), json.loads(found[3])
    # the tiny model sees actions in the bench's frames, and the rules alert on every one
    assert events > 0 and sum(states.values()) >= events
    assert set(states) <= {"pending", "delivered", "dead"} and "dead" not in states
    # at least once: what was marked delivered reached the receiver, validly signed
    assert received["invalid"] == 0 and received["valid"] >= states.get("delivered", 0) > 0
    assert re.search(r"^store CPU ms, with the alert rules: running confidence", out, re.M), out
    assert re.search(r"^on/off: \d\.\d{3} \(", out, re.M), out
    assert re.search(r"^server CPU per clip scored at the fixed count, ms: off \[", out, re.M), out
