"""Person-centric crop in tests: the tiny model with `clip.person_crop`, the empty room of
`tiny_bundle.scene`, the clips the crop contract gives, and a server whose visual encoder
keeps a copy of every clip it is given (in the test, not in the server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from core.bundle import ModelBundle
from core.clip import ClipSpec, DepthPreprocessor, frame_timestamps_us, num_clips, resample_indices
from core.foreground import crop_clip_mm
from server.app import create_app
from server.service import Service
from server.settings import Settings
from tests.helpers import live
from tests.helpers.tiny_bundle import TINY_SPEC, WALL_MM, make_bundle

CROP_SPEC = dataclasses.replace(TINY_SPEC, person_crop=True)


def make_crop_bundle(root: Path) -> ModelBundle:
    return make_bundle(root, spec=CROP_SPEC, name="tiny-crop")


def empty_wall(height: int = 48, width: int = 64) -> np.ndarray:
    """The empty room of `tiny_bundle.scene`: its wall, without noise or holes (uint16 mm)."""
    return np.full((height, width), WALL_MM, np.uint16)


def cropped_clips(
    frames: np.ndarray,
    reference: np.ndarray | None,
    spec: ClipSpec = CROP_SPEC,
    timestamps_us: np.ndarray | None = None,
) -> np.ndarray:
    """What the encoder must get for `frames` (at these timestamps; None: 30 fps): each clip
    on the grid cropped against `reference` (None: whole frames) by core/foreground.py,
    normalized."""
    if timestamps_us is None:
        timestamps_us = frame_timestamps_us(len(frames), 30)
    kept = resample_indices(timestamps_us, spec.kept_fps)
    n = spec.clip_len
    normalize = DepthPreprocessor(spec, spec.height, spec.width)
    return np.stack(
        [normalize(crop_clip_mm(frames[kept[c * n : (c + 1) * n]], reference, spec))
         for c in range(num_clips(len(kept), spec))]
    )  # fmt: skip


class ClipRecorder:
    """Wraps the engine's visual encoder: keeps a copy of every clip it encodes, in order."""

    def __init__(self, visual: Any) -> None:
        self.visual, self.clips = visual, []

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        self.clips.extend(np.array(clips, copy=True))
        return self.visual(clips)

    def take(self) -> np.ndarray:
        out, self.clips = np.stack(self.clips), []
        return out


def recording_server(settings: Settings, monkeypatch: Any) -> tuple[live.LiveServer, ClipRecorder]:
    """A live server whose visual encoder's input is recorded (stop it after the test)."""
    service = Service.load(settings)
    recorder = ClipRecorder(service.engine.visual)
    service.engine.visual = recorder
    monkeypatch.setattr(live, "create_app", lambda s: create_app(s, service))
    return live.LiveServer(settings), recorder


def put_reference(
    url: str,
    camera_id: str,
    body: bytes,
    content_type: str = "image/png",
    token: str | None = live.TOKEN,
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.put(f"{url}/v1/cameras/{camera_id}/reference", content=body, headers=headers)


def reference_call(url: str, method: str, camera_id: str) -> httpx.Response:
    """GET or DELETE the camera's reference, with the tests' token."""
    headers = {"Authorization": f"Bearer {live.TOKEN}"}
    return httpx.request(method, f"{url}/v1/cameras/{camera_id}/reference", headers=headers)
