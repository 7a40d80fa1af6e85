"""The alert rules file: every problem named with file, line, rule and field; and which
alerts an event change owes (threshold, per-camera overrides, cooldown, repeats)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.events.rules import AlertRules, RulesError
from server.events.types import Alert, EventRecord
from server.events.webhooks import new_secret

ROOT = Path(__file__).resolve().parents[3]
LABELS = ("falling down", "staggering", "sit down", "hand waving")
SECRET = new_secret()
T0 = datetime(2026, 12, 3, 6, 0, 0, tzinfo=UTC)

RULES = f"""\
destinations:
  nurses:
    url: http://127.0.0.1:9/hook
    secrets: ["{SECRET}"]
  pager:
    type: webhook
    url: https://pager.example/hook
    secrets: ["{SECRET}"]
rules:
  - name: falls
    labels: ["falling down", "staggering"]
    min_confidence: 0.6
    cooldown_s: 300
    repeat_every_s: 120
    repeat_for_s: 600
    destinations: [nurses]
    cameras:
      bed-3:
        min_confidence: 0.8
      corridor:
        enabled: false
      kitchen:
        labels: ["falling down"]
  - name: everything to the pager
    labels: ["falling down", "sit down"]
    min_confidence: 0.3
    destinations: [pager]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(text)
    return path


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the only line holding `fragment`."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(lines) == 1, (fragment, lines)
    return lines[0]


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as error:
        AlertRules.load(path, LABELS)
    lines = str(error.value).splitlines()
    assert lines[0] == "invalid alert rules:"
    return [line.strip() for line in lines[1:]]


def test_a_valid_file_loads(tmp_path):
    rules = AlertRules.load(write(tmp_path, RULES), LABELS)
    assert set(rules.webhooks) == {"nurses", "pager"}
    assert rules.webhooks["nurses"].secrets == (SECRET,)
    assert SECRET not in repr(rules.webhooks["nurses"])
    assert rules.repeat_every_s == 120
    assert rules.repeat_for_s == 600


def test_an_unknown_label_is_named_with_a_suggestion(tmp_path):
    text = RULES.replace('labels: ["falling down"]', 'labels: ["falling"]')
    line = line_of(text, '["falling"]')
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'alerts.yaml'}:{line}: rule 'falls': "
        "cameras.kitchen.labels[0] 'falling' is not a label of the model; "
        "did you mean 'falling down'?"
    ]


def test_a_negative_threshold_is_named(tmp_path):
    text = RULES.replace("min_confidence: 0.8", "min_confidence: -0.1")
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'alerts.yaml'}:{line_of(text, '-0.1')}: rule 'falls': "
        "cameras.bed-3.min_confidence must be >= 0, got -0.1"
    ]


def test_an_unknown_destination_is_named(tmp_path):
    text = RULES.replace("destinations: [pager]", "destinations: [pager, sms]")
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'alerts.yaml'}:{line_of(text, '[pager, sms]')}: "
        "rule 'everything to the pager': destinations[1] unknown destination 'sms' "
        "(known: nurses, pager)"
    ]


def test_bad_yaml_names_the_line(tmp_path):
    text = RULES.replace("    cooldown_s: 300", "    cooldown_s: [300")
    path = write(tmp_path, text)
    with pytest.raises(RulesError, match=rf"^{re.escape(str(path))}:\d+: not valid YAML: "):
        AlertRules.load(path, LABELS)
    for empty in ("", "- just\n- a list\n"):
        with pytest.raises(RulesError, match="expected a mapping with 'destinations'"):
            AlertRules.load(write(tmp_path, empty), LABELS)
    with pytest.raises(RulesError, match="cannot read"):
        AlertRules.load(tmp_path / "missing.yaml", LABELS)


def test_every_problem_at_once_and_secrets_never_echoed(tmp_path):
    bad_secret = "whsec_" + "A" * 8
    text = (
        RULES.replace("cooldown_s: 300", "cooldown: 300")
        .replace("https://pager.example/hook", "ftp://pager.example/hook")
        .replace(f'secrets: ["{SECRET}"]\nrules', f'secrets: ["{bad_secret}"]\nrules')
        .replace("enabled: false", "enabled: maybe")
        .replace("    destinations: [pager]\n", "")
        .replace("  - name: everything to the pager", "  - name: falls")
        .replace("  nurses:\n", "  nurses:\n    timeout_s: 0\n")
    )
    path = tmp_path / "alerts.yaml"
    found = problems(tmp_path, text)
    assert found == [
        f"{path}:{line_of(text, 'timeout_s: 0')}: destination 'nurses': "
        "timeout_s must be positive, got 0",
        f"{path}:{line_of(text, 'ftp://')}: destination 'pager': url "
        "URL scheme should be 'http' or 'https', got 'ftp://pager.example/hook'",
        f"{path}:{line_of(text, bad_secret)}: destination 'pager': secrets[0] "
        "must hold 24 to 64 bytes, not 6 (make one with: python -c 'from "
        "server.events.webhooks import new_secret; print(new_secret())')",
        f"{path}:{line_of(text, 'cooldown: 300')}: rule 'falls': cooldown "
        "is not a known field (a typo?)",
        f"{path}:{line_of(text, 'maybe')}: rule 'falls': cameras.corridor.enabled "
        "must be a boolean (1/0, true/false, yes/no), got 'maybe'",
        f"{path}:{text.splitlines().index('  - name: falls', 20) + 1}: rule 'falls': "
        "destinations is required",
    ]
    assert "A" * 8 not in "\n".join(found)


def test_cross_checks_run_on_a_file_that_parses(tmp_path):
    text = RULES.replace(
        "    min_confidence: 0.3\n", "    min_confidence: 0.3\n    min_confidence: 0.4\n"
    )
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'alerts.yaml'}:{line_of(text, '0.4')}: rule 'everything to the pager': "
        "min_confidence is given twice"
    ]
    text = RULES.replace("name: everything to the pager", "name: falls")
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'alerts.yaml'}:{text.splitlines().index('  - name: falls', 20) + 1}: "
        "rule 'falls': name 'falls' names an earlier rule too"
    ]


def test_labels_are_free_without_the_models_list(tmp_path):
    text = RULES.replace('"sit down"', '"any label"')
    AlertRules.load(write(tmp_path, text))
    with pytest.raises(RulesError, match="'any label' is not a label of the model"):
        AlertRules.load(write(tmp_path, text), LABELS)


def test_the_example_in_the_docs_loads_with_the_default_models_labels(tmp_path):
    doc = (ROOT / "docs" / "alerts.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert example is not None
    labels = json.loads((ROOT / "models" / "default" / "model.json").read_text())["classes"]
    rules = AlertRules.load(write(tmp_path, example.group(1)), labels)
    assert rules.spec.rules and rules.webhooks


# --- which alerts a change owes -------------------------------------------------------------


class History:
    """The store's side, in memory: when each destination last got an alert for a camera and
    label (the store writes the rows; here `owed` records them as it goes)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str, str], datetime] = {}

    def last_alert_at(self, camera_id: str, label: str, destination: str) -> datetime | None:
        return self.last.get((camera_id, label, destination))


@pytest.fixture
def rules(tmp_path):
    return AlertRules.load(write(tmp_path, RULES), LABELS)


def event(**fields) -> EventRecord:
    base = EventRecord(
        id="e1",
        camera_id="bed-1",
        label="falling down",
        class_id=15,
        confidence=0.7,
        start=T0,
        end=None,
        model_name="default",
        model_version="1",
    )
    return replace(base, **fields)


def owed(rules, history, e: EventRecord, change: str, at: datetime) -> list[tuple[str, str]]:
    alerts = rules.alerts_for(e, change, history, at)
    for a in alerts:
        history.last[(e.camera_id, e.label, a.destination)] = at
    return [(a.destination, a.kind) for a in alerts]


def test_threshold_and_destinations(rules):
    for confidence, expected in [
        (0.29, []),
        (0.3, [("pager", "alert.started")]),
        (0.6, [("nurses", "alert.started"), ("pager", "alert.started")]),
    ]:
        history = History()
        assert owed(rules, history, event(confidence=confidence), "started", T0) == expected
    assert owed(rules, History(), event(label="staggering"), "started", T0) == [
        ("nurses", "alert.started")
    ]
    assert owed(rules, History(), event(label="hand waving"), "started", T0) == []


def test_per_camera_overrides(rules):
    start = "started"
    assert owed(rules, History(), event(camera_id="bed-3", confidence=0.79), start, T0) == [
        ("pager", "alert.started")
    ]
    assert owed(rules, History(), event(camera_id="bed-3", confidence=0.8), start, T0) == [
        ("nurses", "alert.started"),
        ("pager", "alert.started"),
    ]
    assert owed(rules, History(), event(camera_id="corridor", confidence=1.0), start, T0) == [
        ("pager", "alert.started")
    ]
    kitchen = event(camera_id="kitchen", label="staggering", confidence=1.0)
    assert owed(rules, History(), kitchen, start, T0) == []


def test_an_event_alerts_once_when_it_crosses_the_threshold_then_ends(rules):
    history, e = History(), event(confidence=0.5)
    assert owed(rules, history, e, "started", T0) == [("pager", "alert.started")]
    at = T0 + timedelta(seconds=2)
    assert owed(rules, history, replace(e, confidence=0.65), "updated", at) == [
        ("nurses", "alert.started")
    ]
    at += timedelta(seconds=1)
    assert owed(rules, history, replace(e, confidence=0.9), "updated", at) == []
    ended = replace(e, confidence=0.9, end=at)
    assert owed(rules, history, ended, "ended", at) == [
        ("nurses", "alert.ended"),
        ("pager", "alert.ended"),
    ]


def test_an_event_confirmed_only_at_its_end_still_alerts(rules):
    history, e = History(), event(confidence=0.1)
    assert owed(rules, history, e, "started", T0) == []
    end = T0 + timedelta(seconds=3)
    assert owed(rules, history, replace(e, confidence=0.1, end=end), "ended", end) == []
    history = History()
    assert owed(rules, history, replace(e, confidence=0.7, end=end), "ended", end) == [
        ("nurses", "alert.started"),
        ("nurses", "alert.ended"),
        ("pager", "alert.started"),
        ("pager", "alert.ended"),
    ]


def test_cooldown_per_camera_and_label(rules):
    history = History()
    assert ("nurses", "alert.started") in owed(rules, history, event(), "started", T0)
    cooldown = rules.spec.rules[0].cooldown_s
    second = event(id="e2", start=T0 + timedelta(seconds=10))
    just_before = T0 + timedelta(seconds=cooldown) - timedelta(microseconds=1)
    assert ("nurses", "alert.started") not in owed(rules, history, second, "started", just_before)
    other_camera = event(id="e3", camera_id="bed-2", start=just_before)
    assert ("nurses", "alert.started") in owed(rules, history, other_camera, "started", just_before)
    other_label = event(id="e4", label="staggering", start=just_before)
    assert ("nurses", "alert.started") in owed(rules, history, other_label, "started", just_before)
    third = event(id="e5", start=T0 + timedelta(seconds=cooldown))
    at = T0 + timedelta(seconds=cooldown)
    assert ("nurses", "alert.started") in owed(rules, history, third, "started", at)


def test_repeat_until_acknowledged(rules):
    history, e = History(), event()
    owed(rules, history, e, "started", T0)
    every = timedelta(seconds=rules.spec.rules[0].repeat_every_s)
    assert owed(rules, history, e, "repeat", T0 + every - timedelta(microseconds=1)) == []
    assert owed(rules, history, e, "repeat", T0 + every) == [("nurses", "alert.repeated")]
    assert owed(rules, history, e, "repeat", T0 + every + every / 2) == []
    assert owed(rules, history, e, "repeat", T0 + 2 * every) == [("nurses", "alert.repeated")]
    assert owed(rules, history, replace(e, review="acknowledged"), "reviewed", T0 + 2 * every) == []
    for review in ("acknowledged", "false_positive"):
        assert owed(rules, history, replace(e, review=review), "repeat", T0 + 3 * every) == []
    # repeats stop repeat_for_s after the event started, acknowledged or not
    horizon = timedelta(seconds=rules.spec.rules[0].repeat_for_s)
    assert owed(rules, history, e, "repeat", T0 + horizon) == []
    # an event that never alerted never repeats
    quiet = event(id="e2", camera_id="bed-9", confidence=0.2)
    assert owed(rules, history, quiet, "repeat", T0 + every) == []


def test_the_first_rule_that_owes_speaks_for_a_destination(tmp_path):
    text = RULES.replace("destinations: [pager]", "destinations: [pager, nurses]")
    rules = AlertRules.load(write(tmp_path, text), LABELS)
    low = event(confidence=0.4)  # under the first rule's 0.6: the second rule speaks
    assert owed(rules, History(), low, "started", T0) == [
        ("pager", "alert.started"),
        ("nurses", "alert.started"),
    ]
    assert owed(rules, History(), event(), "started", T0) == [
        ("nurses", "alert.started"),
        ("pager", "alert.started"),
    ]


def test_the_payload_is_standard_webhooks_shaped(rules):
    e = event(end=T0 + timedelta(seconds=4, milliseconds=500))
    at = T0 + timedelta(seconds=5)
    [alert, _] = rules.alerts_for(e, "started", History(), at)
    assert alert == Alert(
        destination="nurses",
        kind="alert.started",
        payload={
            "type": "alert.started",
            "timestamp": "2026-12-03T06:00:05Z",
            "data": {
                "id": "e1",
                "camera_id": "bed-1",
                "label": "falling down",
                "class_id": 15,
                "confidence": 0.7,
                "start": "2026-12-03T06:00:00Z",
                "end": "2026-12-03T06:00:04.500000Z",
                "model_name": "default",
                "model_version": "1",
                "review": "new",
                "reviewed_by": None,
                "reviewed_at": None,
                "note": None,
                "keep": False,
                "rule": "falls",
            },
        },
    )
    json.dumps(alert.payload)  # JSON as it is


def test_an_unknown_change_is_a_bug(rules):
    with pytest.raises(ValueError, match="change must be one of"):
        rules.alerts_for(event(), "moved", History(), T0)


def test_a_nested_value_of_the_wrong_shape_is_named_at_its_key(tmp_path):
    text = RULES.replace("      corridor:\n        enabled: false\n", "").replace(
        "    cameras:\n      bed-3:\n        min_confidence: 0.8\n      kitchen:",
        "    cameras:\n      - bed-3\n      - kitchen:",
    )
    [problem] = problems(tmp_path, text)
    assert problem.startswith(
        f"{tmp_path / 'alerts.yaml'}:{line_of(text, '    cameras:')}: rule 'falls': cameras "
    )


def test_what_the_store_may_skip_follows_the_rules(rules):
    # the camera's alerts matter only as far back as the longest cooldown or repeat interval
    assert rules.lookback == timedelta(seconds=300)
    # every minimum a running confidence can cross: the rules' and the cameras' own
    assert rules.thresholds == {0.6, 0.8, 0.3}
    # once an event alerted these, its updates owe nothing more until it ends
    assert rules.destinations_for("bed-1", "falling down") == {"nurses", "pager"}
    assert rules.destinations_for("kitchen", "staggering") == set()
    assert rules.destinations_for("corridor", "falling down") == {"pager"}
    assert rules.destinations_for("bed-1", "hand waving") == set()


# --- MQTT destinations -----------------------------------------------------------------------

MQTT = """\
destinations:
  ward-broker:
    type: mqtt
    host: 10.0.0.5
    username: gd
    password: hunter2-secret
  tls-broker:
    type: mqtt
    host: broker.example
    tls: true
    qos: 2
rules:
  - name: falls
    labels: ["falling down"]
    destinations: [ward-broker, tls-broker]
"""


def test_mqtt_destinations_load_with_their_defaults(tmp_path):
    rules = AlertRules.load(write(tmp_path, MQTT), LABELS)
    ward, tls = rules.destinations["ward-broker"], rules.destinations["tls-broker"]
    assert (ward.broker_port, ward.topic, ward.qos, ward.tls) == (1883, "gd/alerts", 1, False)
    assert (ward.username, ward.password) == ("gd", "hunter2-secret")
    assert (tls.broker_port, tls.qos, tls.username) == (8883, 2, None)
    assert "hunter2" not in repr(rules.destinations)
    assert rules.webhooks == {}


def test_mqtt_problems_are_named_and_the_password_never_echoed(tmp_path):
    text = (
        MQTT.replace("    host: 10.0.0.5\n", "    retain: true\n")
        .replace("password: hunter2-secret", "password: [hunter2-secret]")
        .replace("qos: 2", "qos: 0")
        .replace("tls: true", "tls: true\n    topic: gd/#")
    )
    path = tmp_path / "alerts.yaml"
    found = problems(tmp_path, text)
    ward = "destination 'ward-broker':"
    assert found == [
        # a missing field: the line where its destination's fields start
        f"{path}:{text.splitlines().index('  ward-broker:') + 2}: {ward} host is required",
        f"{path}:{line_of(text, 'retain')}: {ward} retain is not a known field (a typo?)",
        f"{path}:{line_of(text, 'password')}: {ward} password must be a valid string",
        f"{path}:{line_of(text, 'gd/#')}: destination 'tls-broker': topic must not contain "
        "+ # or NUL, got 'gd/#'",
        f"{path}:{line_of(text, 'qos: 0')}: destination 'tls-broker': qos must be 1 or 2 "
        "(QoS 0 has no acknowledgement: no at-least-once), got 0",
    ]
    assert "hunter2" not in "\n".join(found)


def test_an_mqtt_password_needs_its_user_and_a_ca_its_tls(tmp_path):
    text = MQTT.replace("    username: gd\n", "").replace("tls: true", "ca_file: ca.pem")
    path = tmp_path / "alerts.yaml"
    assert problems(tmp_path, text) == [
        f"{path}:{line_of(text, 'password')}: destination 'ward-broker': password needs a username",
        f"{path}:{line_of(text, 'ca.pem')}: destination 'tls-broker': ca_file needs tls: true",
    ]


def test_an_unknown_destination_type_is_named(tmp_path):
    text = MQTT.replace("type: mqtt\n    host: broker", "type: smtp\n    host: broker")
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'alerts.yaml'}:{line_of(text, 'smtp')}: destination 'tls-broker': "
        "type must be one of 'webhook', 'mqtt', got 'smtp'"
    ]
