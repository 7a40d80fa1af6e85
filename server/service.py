"""What every request and stream of one server shares: model, engine, batchers, auth, metrics.

Hot reload (`Service.reload`, from `POST /v1/admin/reload` or gd-serve's SIGHUP): the new bundle
is loaded, checked and warmed up in a thread while the old one serves; then `engine` (the model
now served, its bundle included) is replaced in one assignment on the event loop. Whoever took
the old engine keeps it: an upload finishes on the model it started on, and a stream moves to the
new one at its next clip or stays on its own (server/stream.py). A refused bundle changes
nothing. The old engine is freed when nothing holds it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Gauge

from core.bundle import ModelBundle, load_bundle
from core.clip import ClipSpec
from server.auth import Auth
from server.batcher import MicroBatcher
from server.engine import Engine, load_engine
from server.eventbus import EventBus
from server.metrics import Metrics
from server.preview import PreviewStore
from server.recording_worker import RecordingDecoder, remove_stale_spool_files
from server.settings import Settings

log = logging.getLogger("gd.server")


class ReloadError(Exception):
    """A bundle was refused by a reload; the model served has not changed."""


def check_score_delay(delay: int, spec: ClipSpec) -> None:
    """A score delay must leave the clip inside the window that ends `delay` clips later."""
    if not 0 <= delay <= spec.window - 1:
        raise ValueError(
            f"score_delay must be in [0, {spec.window - 1}] clips for this model "
            f"(its window is {spec.window} clips), got {delay}"
        )


@dataclass
class Service:
    settings: Settings
    engine: Engine  # the model served now, its bundle included; `reload` replaces it
    auth: Auth
    admin: Auth = field(default_factory=lambda: Auth(()))  # POST /v1/admin/reload
    metrics: Metrics = field(default_factory=Metrics)
    bus: EventBus = field(default_factory=EventBus)  # streams' events, for whoever listens
    # One thread runs the model: ONNX Runtime parallelizes inside a run (intra-op threads),
    # and runs from several threads would only fight over the same cores.
    model_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="gd-model")
    )
    # Decoding uploads off the event loop; a recording's thread waits on its decoder process,
    # so there are two threads besides those: npy / zip uploads never queue behind recordings.
    decode_executor: ThreadPoolExecutor = field(init=False)
    recordings: RecordingDecoder = field(init=False)
    # The batchers of the two encoders, made here and started by `start` (with the event loop).
    visual: MicroBatcher = field(init=False)
    sequence: MicroBatcher = field(init=False)
    previews: PreviewStore | None = field(init=False)  # --preview: the cameras' newest frames
    active_streams: int = 0
    draining: bool = False
    reloads: int = 0  # successful ones
    loop: asyncio.AbstractEventLoop | None = None  # the server's, once started
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task] = field(default_factory=set)  # signal-started reloads

    def __post_init__(self) -> None:
        s = self.settings
        # Here rather than in server/metrics.py: they describe the service's own model slot.
        r = self.metrics.registry
        self.reload_counter = Counter(
            "gd_model_reloads", "Model reloads, by result (ok, refused)", ["result"], registry=r
        )
        self.model_info = Gauge(
            "gd_model_info", "The model served: 1 for its name and version", ["name", "version"],
            registry=r,
        )  # fmt: skip
        self.model_info.labels(self.bundle.name, self.bundle.version).set(1)
        self.decode_executor = ThreadPoolExecutor(
            s.max_decoders + 2, thread_name_prefix="gd-decode"
        )
        self.recordings = RecordingDecoder(
            s.spool_dir, s.decode_timeout_s, s.decode_memory_bytes, s.max_decoders
        )
        # Streams give each item its engine's function (an old model's or the new one's).
        m, wait = self.metrics, s.max_wait_ms / 1000
        self.visual = MicroBatcher(
            None, self.model_executor, s.max_batch, wait, m.batch_observer("visual_encoder")
        )
        self.sequence = MicroBatcher(
            None, self.model_executor, s.max_batch, wait, m.batch_observer("sequence_encoder")
        )
        self.previews = PreviewStore() if s.preview else None
        if self.previews is not None:
            self.bus.subscribe(self.previews)  # a camera's frame goes when its stream ends

    @classmethod
    def load(cls, settings: Settings) -> Service:
        """Check the settings and load the model; raises before anything listens."""
        tokens = settings.check_auth()
        admin = settings.check_admin(tokens)
        bundle = load_bundle(settings.model)
        engine = load_engine(bundle, settings.device, settings.threads)
        service = cls(settings, engine, Auth(tokens), Auth(admin))
        if not bundle.causal and service.score_delay == 0:
            log.warning(
                "the sequence encoder is bidirectional and live scores have no delay: each "
                "clip is scored at the newest position of its window, without future context, "
                "less accurately than uploads (set GD_SCORE_DELAY, or the bundle's "
                "postprocess.score_delay; docs/results.md measures the trade-off)"
            )
        if bundle.clip.person_crop:  # without references such a model detects next to nothing
            log.info(
                "%s crops each clip to the person against the camera's empty-room reference: "
                "store one per camera (gd-stream reference; docs/api.md, Camera references); "
                "streams without one get a no_reference warning",
                bundle.name,
            )
        return service

    def start(self) -> None:
        """Clean the spool, start the batchers (needs the running event loop)."""
        remove_stale_spool_files(self.settings.spool_dir)
        self.loop = asyncio.get_running_loop()
        self.visual.start()
        self.sequence.start()

    async def stop(self) -> None:
        self.draining = True
        for batcher in (self.visual, self.sequence):
            await batcher.stop()  # one never started has nothing to stop
        self.recordings.stop()  # a decoder stuck in librealsense must not outlive the server
        self.model_executor.shutdown(wait=False, cancel_futures=True)
        self.decode_executor.shutdown(wait=False, cancel_futures=True)

    @property
    def bundle(self) -> ModelBundle:
        """The bundle served now."""
        return self.engine.bundle

    async def reload(self, path: Path | None = None) -> tuple[ModelBundle, ModelBundle]:
        """Serve the bundle at `path` (default: the configured `model`, what a restart would
        load): load and check it in a thread, then swap. Returns (old, new) bundles; raises
        `ReloadError` naming the problem, and the old model keeps serving. One at a time."""
        path = Path(path if path is not None else self.settings.model)
        async with self._reload_lock:
            old = self.bundle
            try:
                engine = await asyncio.to_thread(self._load, path)
            except Exception as e:  # any failure to load refuses the bundle, whatever raised
                self.reload_counter.labels("refused").inc()
                ours = isinstance(e, ValueError | OSError)  # BundleError, EngineError, ...
                message = str(e) if ours else f"{path}: cannot load it: {type(e).__name__}: {e}"
                log.error(
                    "model reload refused, still serving %s %s: %s", old.name, old.version, message
                )
                raise ReloadError(message) from e
            self.engine = engine
            self.reloads += 1
            self.reload_counter.labels("ok").inc()
            self.model_info.remove(old.name, old.version)
            self.model_info.labels(engine.bundle.name, engine.bundle.version).set(1)
            new = engine.bundle
            log.info(
                "model reloaded from %s: %s %s -> %s %s",
                path, old.name, old.version, new.name, new.version,
            )  # fmt: skip
            return old, new

    def _load(self, path: Path) -> Engine:
        """The checks a bundle must pass to be served (in a thread: it reads, hashes, builds
        and warms up both encoders)."""
        bundle = load_bundle(path)
        if self.settings.score_delay is not None:  # the bundle's own is checked by load_bundle
            check_score_delay(self.settings.score_delay, bundle.clip)
        return load_engine(bundle, self.settings.device, self.settings.threads)

    def reload_from_signal(self) -> None:
        """For gd-serve's SIGHUP handler: reload the configured bundle on the event loop; the
        outcome is logged (a refusal by `reload`)."""
        if self.loop is None or self.loop.is_closed():
            log.warning("SIGHUP before the server started serving: nothing reloaded")
            return
        self.loop.call_soon_threadsafe(self._start_reload)

    def _start_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_quietly())
        self._tasks.add(task)  # held, or the loop could collect it half-way
        task.add_done_callback(self._tasks.discard)

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(ReloadError):  # logged by reload
            await self.reload()

    @property
    def score_delay(self) -> int:
        """Streams' score delay unless a hello asks another: the setting, else the bundle's."""
        s = self.settings.score_delay
        return self.bundle.score_delay if s is None else s

    def model_card(self) -> dict:
        return {**self.bundle.card(), "engine": self.engine.info}
