"""What every request and stream of one server shares: model, engine, batchers, auth, metrics."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from core.bundle import ModelBundle, load_bundle
from server.auth import Auth
from server.batcher import MicroBatcher
from server.engine import Engine, load_engine
from server.eventbus import EventBus
from server.metrics import Metrics
from server.recording_worker import RecordingDecoder, remove_stale_spool_files
from server.settings import Settings

log = logging.getLogger("gd.server")


@dataclass
class Service:
    settings: Settings
    bundle: ModelBundle
    engine: Engine
    auth: Auth
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
    active_streams: int = 0
    draining: bool = False

    def __post_init__(self) -> None:
        s = self.settings
        self.decode_executor = ThreadPoolExecutor(
            s.max_decoders + 2, thread_name_prefix="gd-decode"
        )
        self.recordings = RecordingDecoder(
            s.spool_dir, s.decode_timeout_s, s.decode_memory_bytes, s.max_decoders
        )
        m, wait = self.metrics, s.max_wait_ms / 1000
        self.visual = MicroBatcher(
            self.engine.encode_clips, self.model_executor, s.max_batch, wait,
            m.batch_observer("visual_encoder"),
        )  # fmt: skip
        self.sequence = MicroBatcher(
            self.engine.score_windows, self.model_executor, s.max_batch, wait,
            m.batch_observer("sequence_encoder"),
        )  # fmt: skip

    @classmethod
    def load(cls, settings: Settings) -> Service:
        """Check the settings and load the model; raises before anything listens."""
        tokens = settings.check_auth()
        bundle = load_bundle(settings.model)
        engine = load_engine(bundle, settings.device, settings.threads)
        service = cls(settings, bundle, engine, Auth(tokens))
        if not bundle.causal and service.score_delay == 0:
            log.warning(
                "the sequence encoder is bidirectional and live scores have no delay: each "
                "clip is scored at the newest position of its window, without future context, "
                "less accurately than uploads (set GD_SCORE_DELAY, or the bundle's "
                "postprocess.score_delay; docs/results.md measures the trade-off)"
            )
        return service

    def start(self) -> None:
        """Clean the spool, start the batchers (needs the running event loop)."""
        remove_stale_spool_files(self.settings.spool_dir)
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
    def score_delay(self) -> int:
        """Streams' score delay unless a hello asks another: the setting, else the bundle's."""
        s = self.settings.score_delay
        return self.bundle.score_delay if s is None else s

    def model_card(self) -> dict:
        return {**self.bundle.card(), "engine": self.engine.info}
