"""A camera whose server was killed mid-stream (its disconnection never stored) is reported
disconnected once it has scored nothing for STALE_AFTER."""

from datetime import UTC, datetime, timedelta

from server.events.store import CameraRecord
from server.routers.events import STALE_AFTER, stale

T0 = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)


def camera(connected: bool) -> CameraRecord:
    return CameraRecord("door", T0, T0, connected, 30.0, 10, 0, T0, "sit down", 0.4)


def test_a_connected_camera_silent_longer_than_stale_after_is_reported_disconnected():
    assert stale(camera(True), T0 + STALE_AFTER).connected is True  # at the limit: still on
    late = stale(camera(True), T0 + STALE_AFTER + timedelta(seconds=1))
    assert late == camera(False)  # only `connected` changes


def test_a_disconnected_camera_stays_so():
    assert stale(camera(False), T0).connected is False
