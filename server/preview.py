"""The opt-in depth preview (`--preview`, docs/dashboard.md): each streaming camera's newest
frame, in memory only, answered as a small colorized PNG.

Depth shows shapes, not faces, so a small picture of where a camera looks is acceptable where
a video feed would not be; still only where the operator turns it on. Nothing here touches the
disk, the log or the event store: a stream hands over the frame it has just preprocessed (a
reference, no copy: the preview costs streams a dictionary assignment per kept frame), the
store forgets a camera when its stream ends (it listens on the event bus), and the PNG is made
only when asked, at most once per `interval_s` per camera however many dashboards ask.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

import numpy as np

from core.clip import ClipSpec
from core.events import Event
from core.wire import Hello

MAX_WIDTH = 160  # pixels: a preview, not a picture
INTERVAL_S = 1.0  # a camera's PNG is made again at most this often


def millimetres(image: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """A frame as `DepthPreprocessor` made it (normalized float32) back in millimetres, as
    float64: its lookup maps valid depth to `(mm / depth_max_mm - mean) / std` and invalid
    depth to the same of 0 mm."""
    return (image.astype(np.float64) * spec.std + spec.mean) * spec.depth_max_mm


@cache
def _turbo() -> np.ndarray:
    """Google's Turbo colour map, uint8 RGB [256, 3]: perceptually ordered, and bright enough
    at both ends to tell near from far at a glance."""
    import cv2  # the serve extra's; imported when a preview is first made

    ramp = np.arange(256, dtype=np.uint8)[:, None]
    return cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)[:, 0, ::-1].copy()


def colorize(image: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """A preprocessed frame as uint8 RGB `[h, w, 3]`, at most `MAX_WIDTH` wide (every n-th
    pixel): the model's depth range on Turbo, near red, far blue; invalid depth black."""
    step = -(-spec.width // MAX_WIDTH)  # ceil: the fewest pixels skipped that fit
    mm = millimetres(image[::step, ::step], spec)
    # Valid depth is at least depth_min_mm >= 1 and invalid depth 0, each up to the float32
    # rounding of the normalized value (far below 0.5 mm).
    valid = mm >= spec.depth_min_mm - 0.5
    nearness = (spec.depth_max_mm - mm) / (spec.depth_max_mm - spec.depth_min_mm)
    rgb = _turbo()[np.clip(np.rint(255 * nearness), 0, 255).astype(np.uint8)]
    rgb[~valid] = 0
    return rgb


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 RGB `[h, w, 3]` as a PNG."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV wants BGR
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} preview as PNG")
    return data.tobytes()


class PreviewStore:
    """Each streaming camera's newest preprocessed frame, and its PNG once asked for.

    Used on the event loop only (streams keep, the route asks, the bus says who left), so it
    needs no lock. A listener of the event bus: a camera's frame goes when its stream ends.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, interval_s: float = INTERVAL_S
    ) -> None:
        self.clock, self.interval_s = clock, interval_s
        self._frames: dict[str, tuple[np.ndarray, ClipSpec]] = {}
        self._pngs: dict[str, tuple[float, bytes]] = {}  # camera -> (made at, PNG)

    def keep(self, camera_id: str, image: np.ndarray, spec: ClipSpec) -> None:
        """The camera's newest frame (preprocessed for `spec`, not to be changed after)."""
        self._frames[camera_id] = (image, spec)

    def png(self, camera_id: str) -> bytes | None:
        """The camera's newest frame as a PNG (the one made within `interval_s`, if any);
        None if it is not streaming here or has sent no frame yet."""
        kept = self._frames.get(camera_id)
        if kept is None:
            return None
        now = self.clock()
        made = self._pngs.get(camera_id)
        if made is None or now - made[0] >= self.interval_s:
            made = (now, encode_png(colorize(*kept)))
            self._pngs[camera_id] = made
        return made[1]

    def __len__(self) -> int:
        return len(self._frames)

    async def connected(self, camera_id: str, hello: Hello, model: dict[str, str]) -> None:
        pass

    async def event(self, camera_id: str, event: Event, model: dict[str, str]) -> None:
        pass

    async def disconnected(self, camera_id: str, frames: int, dropped: int) -> None:
        # Another stream of the same camera id keeps its next frame again.
        self._frames.pop(camera_id, None)
        self._pngs.pop(camera_id, None)
