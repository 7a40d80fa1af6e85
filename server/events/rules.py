"""The alert rules file: which events alert whom, read once at start (docs/alerts.md).

A YAML file (YAML rather than TOML because every problem can then be named with its line: the
server refuses to start on a bad file, saying `FILE:LINE: rule 'falls': min_confidence must
be <= 1, got 1.5`). It names the `destinations` (signed webhooks, and MQTT brokers) and the
`rules`: labels, minimum confidence, per-camera overrides, cooldown, repeat until
acknowledged. `AlertRules` is the `AlertPolicy` the event store calls on every change.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
)

from server.events.mqtt import topic_problem
from server.events.types import Alert, AlertHistory, EventRecord
from server.events.webhooks import decode_secret
from server.settings import REQUIREMENTS

if TYPE_CHECKING:  # imported by `read_rules`: a server without a rules file starts without it
    import yaml

# "reviewed" (acknowledged, false positive, a note) owes nothing: it only stops repeats
CHANGES = ("started", "updated", "ended", "repeat", "reviewed")
# Pydantic's error types in the words of a rules message (the settings' words, and these).
_WORDS = {
    **REQUIREMENTS,
    "extra_forbidden": "is not a known field (a typo?)",
    "missing": "is required",
    "too_short": "must have at least {min_length} item(s)",
    "union_tag_invalid": "must be one of {expected_tags}, got {tag!r}",
}
# fields whose values never appear in a message
_SECRET_FIELDS = ("secrets", "password")


class RulesError(Exception):
    """The rules file cannot be read or is invalid; the message names file, line and field."""


def _secret(value: str) -> str:
    decode_secret(value)  # raises ValueError saying what is wrong, never echoing the secret
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _topic(value: str) -> str:
    problem = topic_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _qos(value: int) -> int:
    if value not in (1, 2):
        raise ValueError("must be 1 or 2 (QoS 0 has no acknowledgement: no at-least-once)")
    return value


class _Retried(_Strict):
    """How the deliverer retries a destination (docs/alerts.md, "Retries and dead letters")."""

    # at most 30 s: well inside the minute for which the store lends a row to one deliverer
    timeout_s: float = Field(10.0, gt=0, le=30)
    max_attempts: int = Field(20, ge=1, le=100)  # with the default backoff: 1 to 2 hours
    backoff_s: float = Field(2.0, gt=0)  # the wait after the first failed attempt, doubling
    backoff_max_s: float = Field(600.0, gt=0)


class WebhookDestination(_Retried):
    """An HTTP endpoint that receives signed alerts (Standard Webhooks)."""

    type: Literal["webhook"] = "webhook"
    url: AnyHttpUrl
    # newest first: every delivery is signed with each, so receivers can rotate without a gap
    secrets: tuple[Annotated[str, AfterValidator(_secret)], ...] = Field(min_length=1, repr=False)


class MqttDestination(_Retried):
    """An MQTT broker that takes each alert on `<topic>/<camera>`, delivered once the broker
    acknowledged it (QoS 1 or 2)."""

    type: Literal["mqtt"]
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # None: 1883, or 8883 with TLS
    topic: Annotated[str, AfterValidator(_topic)] = "gd/alerts"
    username: str | None = Field(default=None, min_length=1)
    password: str | None = Field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None  # TLS: the broker's CA; None: the system's CAs
    qos: Annotated[int, AfterValidator(_qos)] = 1

    @property
    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls else 1883


def _destination_type(value: Any) -> str:
    """The `type` of a destination, `webhook` where it is left out (as before there were
    others); a value that is no mapping is checked, and refused, as a webhook."""
    if isinstance(value, dict):
        return str(value.get("type", "webhook"))
    return getattr(value, "type", "webhook")


Destination = WebhookDestination | MqttDestination
# what the file holds: the destination its `type` names
_Typed = Annotated[
    Annotated[WebhookDestination, Tag("webhook")] | Annotated[MqttDestination, Tag("mqtt")],
    Discriminator(_destination_type),
]


class CameraOverride(_Strict):
    """A camera's own settings within one rule; what it leaves out comes from the rule."""

    enabled: bool = True
    labels: tuple[str, ...] | None = Field(default=None, min_length=1)
    min_confidence: float | None = Field(default=None, ge=0, le=1)


class Rule(_Strict):
    name: str = Field(min_length=1)
    labels: tuple[str, ...] = Field(min_length=1)
    min_confidence: float = Field(0.5, ge=0, le=1)
    cooldown_s: float = Field(0.0, ge=0)  # after an alert, same camera and label stay quiet
    repeat_every_s: float | None = Field(default=None, gt=0)  # None: no repeats
    repeat_for_s: float = Field(3600.0, gt=0)  # repeats stop this long after the event started
    destinations: tuple[str, ...] = Field(min_length=1)
    cameras: dict[str, CameraOverride] = Field(default_factory=dict)

    def for_camera(self, camera_id: str) -> tuple[tuple[str, ...], float] | None:
        """The labels and threshold this rule applies on a camera; None where it is off."""
        own = self.cameras.get(camera_id, CameraOverride())
        if not own.enabled:
            return None
        labels = self.labels if own.labels is None else own.labels
        threshold = self.min_confidence if own.min_confidence is None else own.min_confidence
        return labels, threshold


class RulesFile(_Strict):
    destinations: dict[str, _Typed] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()


class AlertRules:
    """The `AlertPolicy`: which alerts an event change owes, to which destinations."""

    def __init__(self, spec: RulesFile) -> None:
        self.spec = spec

    @classmethod
    def load(cls, path: Path, labels: Collection[str] | None = None) -> AlertRules:
        """Read and check a rules file; `labels`, the model's action names, if given, are the
        only labels rules may name. Raises RulesError naming the file, line and field."""
        return cls(read_rules(path, labels))

    @property
    def destinations(self) -> dict[str, Destination]:
        """Every destination, by name: what the deliverer delivers to."""
        return dict(self.spec.destinations)

    @property
    def webhooks(self) -> dict[str, WebhookDestination]:
        return {n: d for n, d in self.spec.destinations.items() if d.type == "webhook"}

    @property
    def repeat_every_s(self) -> float | None:
        """How often the store should offer unacknowledged events for a "repeat" (the
        shortest interval of any rule); None when no rule repeats."""
        every = [r.repeat_every_s for r in self.spec.rules if r.repeat_every_s is not None]
        return min(every, default=None)

    @property
    def lookback(self) -> timedelta:
        """How far back the rules look at a camera's alerts: the longest cooldown or repeat
        interval (an event's own alerts count at any age: the store finds them by its id)."""
        spans = [r.cooldown_s for r in self.spec.rules]
        spans += [r.repeat_every_s for r in self.spec.rules if r.repeat_every_s is not None]
        return timedelta(seconds=max(spans, default=0.0))

    @property
    def thresholds(self) -> frozenset[float]:
        """Every minimum confidence a rule applies somewhere (its own, its cameras')."""
        found = {r.min_confidence for r in self.spec.rules}
        for rule in self.spec.rules:
            found |= {
                o.min_confidence for o in rule.cameras.values() if o.min_confidence is not None
            }
        return frozenset(found)

    def destinations_for(self, camera_id: str, label: str) -> frozenset[str]:
        """The destinations some rule may alert about this label on this camera: once an
        event has alerted each of them, its updates owe nothing more until it ends."""
        return frozenset(
            d
            for rule in self.spec.rules
            if (applies := rule.for_camera(camera_id)) is not None and label in applies[0]
            for d in rule.destinations
        )

    @property
    def repeat_for_s(self) -> float:
        """Events that started longer ago than this never repeat (the longest of any rule)."""
        return max((r.repeat_for_s for r in self.spec.rules if r.repeat_every_s), default=0.0)

    def alerts_for(
        self, event: EventRecord, change: str, history: AlertHistory, now: datetime
    ) -> list[Alert]:
        """What this change owes: for each destination at most one rule (the first in the file
        that owes something) speaks, so overlapping rules never alert twice."""
        if change not in CHANGES:
            raise ValueError(f"change must be one of {CHANGES}, not {change!r}")
        alerts: list[Alert] = []
        served: set[str] = set()
        for rule in self.spec.rules:
            applies = rule.for_camera(event.camera_id)
            if applies is None or event.label not in applies[0]:
                continue
            if change in ("started", "updated") and event.confidence < applies[1]:
                continue  # owes nothing whatever the history: no need to ask it
            for destination in rule.destinations:
                if destination in served:
                    continue
                last = history.last_alert_at(event.camera_id, event.label, destination)
                kinds = _owed(rule, applies[1], event, change, last, now)
                if kinds:
                    served.add(destination)
                alerts += [Alert(destination, k, payload(k, event, rule.name, now)) for k in kinds]
        return alerts


def _owed(
    rule: Rule,
    threshold: float,
    event: EventRecord,
    change: str,
    last: datetime | None,
    now: datetime,
) -> list[str]:
    """The alert kinds one rule owes one destination. `last` is that destination's newest
    alert for this camera and label, of any kind; one at or after the event's start is taken
    as this event's own (AlertHistory says no more)."""
    since = None if last is None else (now - last).total_seconds()
    alerted = last is not None and last >= event.start
    if change == "reviewed":
        return []
    if change == "repeat":
        due = (
            alerted
            and since is not None
            and rule.repeat_every_s is not None
            and since >= rule.repeat_every_s
            and event.review == "new"
            and event.confidence >= threshold
            and (now - event.start).total_seconds() < rule.repeat_for_s
        )
        return ["alert.repeated"] if due else []
    if alerted:
        return ["alert.ended"] if change == "ended" else []
    cooling = since is not None and since < rule.cooldown_s
    if event.confidence < threshold or cooling or event.review == "false_positive":
        return []
    # an event that reaches the threshold only at its end still alerts, late but not lost
    return ["alert.started", "alert.ended"] if change == "ended" else ["alert.started"]


def payload(kind: str, event: EventRecord, rule: str, now: datetime) -> dict[str, Any]:
    """The Standard Webhooks body: `type`, `timestamp` and the event as `data`."""
    data = {
        k: _iso(v) if isinstance(v, datetime) else v for k, v in dataclasses.asdict(event).items()
    }
    return {"type": kind, "timestamp": _iso(now), "data": {**data, "rule": rule}}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def read_rules(path: Path, labels: Collection[str] | None = None) -> RulesFile:
    """The checked contents of a rules file (see AlertRules.load)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RulesError(f"alert rules {path}: cannot read: {e}") from None
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise RulesError(f"{path}{at}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{path}: expected a mapping with 'destinations' and 'rules'")
    problems = [(loc, "is given twice") for loc in _duplicates(root, ())]
    try:
        spec = RulesFile.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        locs = [_loc(err) for err in errors]
        problems += [
            (loc, _message(err))
            for loc, err in zip(locs, errors, strict=True)
            # pydantic counts a list's invalid items out and then finds the list too short
            if not (err["type"] == "too_short" and any(o[: len(loc)] == loc != o for o in locs))
        ]
    else:
        problems += _cross_check(spec, labels)
    if problems:
        # in the file's order, as the reader goes through it
        problems.sort(key=lambda p: _line(root, p[0]))
        lines = [_describe(path, root, data, loc, message) for loc, message in problems]
        raise RulesError("invalid alert rules:\n  " + "\n  ".join(lines))
    return spec


def _loc(err: Mapping[str, Any]) -> tuple:
    """Where an error is, as the file has it: without pydantic's destination type (a level
    the file does not have), and an unknown type at the `type` field."""
    loc = tuple(err["loc"])
    if err["type"] == "union_tag_invalid":
        return (*loc, "type")
    if len(loc) >= 3 and loc[0] == "destinations" and loc[2] in ("webhook", "mqtt"):
        return loc[:2] + loc[3:]
    return loc


def _cross_check(spec: RulesFile, labels: Collection[str] | None) -> list[tuple[tuple, str]]:
    """What one field cannot say alone: unknown destinations and labels, duplicate names, an
    MQTT password without its user, a CA without TLS."""
    problems: list[tuple[tuple, str]] = []
    for name, place in spec.destinations.items():
        if isinstance(place, MqttDestination):
            if place.password is not None and place.username is None:
                problems.append((("destinations", name, "password"), "needs a username"))
            if place.ca_file is not None and not place.tls:
                problems.append((("destinations", name, "ca_file"), "needs tls: true"))
    names = [r.name for r in spec.rules]
    for i, rule in enumerate(spec.rules):
        if names.index(rule.name) != i:
            problems.append((("rules", i, "name"), f"{rule.name!r} names an earlier rule too"))
        for j, d in enumerate(rule.destinations):
            if d not in spec.destinations:
                known = ", ".join(spec.destinations) or "none"
                problems.append(
                    (("rules", i, "destinations", j), f"unknown destination {d!r} (known: {known})")
                )
        if labels is None:
            continue
        lists = [(("rules", i, "labels"), rule.labels)] + [
            (("rules", i, "cameras", c, "labels"), o.labels)
            for c, o in rule.cameras.items()
            if o.labels is not None
        ]
        for loc, given in lists:
            for j, label in enumerate(given):
                if label not in labels:
                    close = difflib.get_close_matches(label, list(labels), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    problems.append(((*loc, j), f"{label!r} is not a label of the model{hint}"))
    return problems


def _message(err: Mapping[str, Any]) -> str:
    # limits as written in the file: 0 rather than pydantic's 0.0
    ctx = {
        k: int(v) if isinstance(v, float) and v.is_integer() else v
        for k, v in err.get("ctx", {}).items()
    }
    if err["type"] == "greater_than" and ctx["gt"] == 0:
        text = "must be positive"
    elif err["type"] in _WORDS:
        text = _WORDS[err["type"]].format(**ctx)
    else:
        text = err["msg"].replace("Input should be", "must be")
    scalar = isinstance(err.get("input"), str | int | float | bool)
    secret = any(f in err["loc"] for f in _SECRET_FIELDS)
    if scalar and not secret and err["type"] not in ("missing", "extra_forbidden"):
        text += f", got {err['input']!r}"
    return text


def _describe(
    path: Path, root: yaml.Node | None, data: Any, loc: Sequence[Any], message: str
) -> str:
    """`FILE:LINE: rule 'NAME': FIELD MESSAGE`, the field relative to its rule or destination."""
    where, field = "", list(loc)
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules")
        name = None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            name = rules[loc[1]].get("name")
        where = f"rule {name!r}: " if isinstance(name, str) else f"rule {loc[1] + 1}: "
        field = field[2:]
    elif len(loc) >= 2 and loc[0] == "destinations":
        where, field = f"destination {loc[1]!r}: ", field[2:]
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in field).lstrip(".")
    return f"{path}:{_line(root, loc)}: {where}{dotted or 'the entry'} {message}"


def _line(node: yaml.Node | None, loc: Sequence[Any]) -> int:
    """The 1-based line of the deepest node along `loc` (a missing field: its parent's)."""
    if node is None:
        return 1
    import yaml

    line = node.start_mark.line + 1
    for depth, part in enumerate(loc):
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    # the field named last: its key's line (where a nested value starts after)
                    child = key if depth == len(loc) - 1 else value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _duplicates(node: yaml.Node | None, loc: tuple) -> list[tuple]:
    """Keys given twice in one mapping (YAML would silently keep the last)."""
    import yaml

    found: list[tuple] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                found.append((*loc, key.value))
            seen.add(key.value)
            found += _duplicates(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicates(item, (*loc, i))
    return found
