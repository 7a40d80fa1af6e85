"""Prometheus metrics, one registry per app (so tests and several apps in one process never
share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.streams = Gauge("gd_streams_active", "Open WebSocket streams", registry=r)
        self.streams_closed = Counter(
            "gd_streams_closed", "Streams closed, by close code", ["code"], registry=r
        )
        self.frames = Counter("gd_frames_received", "Frames received on streams", registry=r)
        self.drops = Counter(
            "gd_frames_dropped", "Frames dropped (oldest first) under overload", registry=r
        )
        self.clips = Counter("gd_clips_scored", "Stream clips scored", registry=r)
        self.clip_latency = Histogram(
            "gd_clip_latency_seconds",
            "From the arrival of a clip's last frame to its scores event",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "gd_batch_size", "Items per model run", ["encoder"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "gd_batch_seconds",
            "Seconds per model run",
            ["encoder"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.uploads = Counter("gd_uploads", "Uploads, by HTTP status", ["status"], registry=r)
        self.upload_seconds = Histogram(
            "gd_upload_seconds", "Upload processing time", buckets=LATENCY_BUCKETS, registry=r
        )

    def batch_observer(self, encoder: str):
        size, seconds = self.batch_size.labels(encoder), self.batch_seconds.labels(encoder)

        def observe(n: int, s: float) -> None:
            size.observe(n)
            seconds.observe(s)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
