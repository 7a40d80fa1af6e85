"""Rooms, furniture and cameras, and ray casting of the static background.

World frame: y up, floor at y = 0, the performance spot at the origin; camera 1 looks at it
from +z. Cameras use the Kinect v2 camera space: x to the sensor's left, y up, z away from the
sensor (right-handed), and project as u = cx + fx x / z, v = cy - fy y / z (the mirrored
image the Kinect delivers). Ray parameters are camera z, so a hit's t is its depth directly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

DEPTH_HFOV_DEG = 70.6  # Kinect v2 depth camera
COLOR_HFOV_DEG = 84.1  # Kinect v2 colour camera
COLOR_OFFSET = (-0.052, 0.0, 0.0)  # colour camera centre in depth-camera space (m)
VIEW_ANGLES_DEG = {1: 0.0, 2: 45.0, 3: -45.0}  # NTU: camera 1 in front, 2 and 3 at +-45 deg

FLOOR, CEILING, BACK, FRONT, LEFT, RIGHT = range(6)  # surface ids; boxes follow from 6


class SceneError(ValueError):
    """A scene or camera parameter is out of range."""


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> Intrinsics:
        """Square pixels, principal point at the centre, horizontal field of view as given."""
        if width < 8 or height < 8:
            raise SceneError(f"image size {width}x{height} is too small (at least 8x8)")
        fx = float((width / 2) / np.tan(np.radians(hfov_deg) / 2))
        return cls(fx, fx, (width - 1) / 2, (height - 1) / 2, width, height)

    @classmethod
    def from_fovs(cls, width: int, height: int, hfov_deg: float, vfov_deg: float) -> Intrinsics:
        """Principal point at the centre; fx and fy from each axis' field of view, which spans
        the image from the outer edge of its first pixel to that of its last."""
        if width < 8 or height < 8:
            raise SceneError(f"image size {width}x{height} is too small (at least 8x8)")
        if not (0 < hfov_deg < 180 and 0 < vfov_deg < 180):
            raise SceneError(f"fields of view must be in (0, 180) deg, got {hfov_deg}x{vfov_deg}")
        fx = float((width / 2) / np.tan(np.radians(hfov_deg) / 2))
        fy = float((height / 2) / np.tan(np.radians(vfov_deg) / 2))
        return cls(fx, fy, (width - 1) / 2, (height - 1) / 2, width, height)

    def project(self, p: np.ndarray) -> np.ndarray:
        """Camera-space points [..., 3] -> pixel coordinates [..., 2] (x, y)."""
        z = np.maximum(p[..., 2], 1e-6)
        return np.stack([self.cx + self.fx * p[..., 0] / z, self.cy - self.fy * p[..., 1] / z], -1)

    def rays(self) -> np.ndarray:
        """Camera-space ray directions [H, W, 3] with z = 1, one per pixel centre."""
        u = (np.arange(self.width) - self.cx) / self.fx
        v = -(np.arange(self.height) - self.cy) / self.fy
        uu, vv = np.meshgrid(u, v)
        return np.stack([uu, vv, np.ones_like(uu)], -1)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.fx, self.fy, self.cx, self.cy)


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation (rows: camera x = left, y = up, z = forward)."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    left = np.cross([0.0, 1.0, 0.0], forward)
    left = left / np.linalg.norm(left)
    return np.stack([left, np.cross(forward, left), forward])


@dataclass(frozen=True)
class Camera:
    position: np.ndarray  # world (3,)
    rotation: np.ndarray  # world -> camera (3, 3)
    depth: Intrinsics
    color: Intrinsics

    def to_camera(self, p: np.ndarray) -> np.ndarray:
        """World points [..., 3] -> depth-camera space."""
        return (p - self.position) @ self.rotation.T

    def color_origin(self) -> np.ndarray:
        return self.position + self.rotation.T @ np.array(COLOR_OFFSET)


@dataclass(frozen=True)
class Box:
    """An upright box (furniture part, poster, window) turned by `yaw` about its centre."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    color: tuple[float, float, float]  # RGB in 0..1
    yaw: float = 0.0
    dark: bool = False  # absorbs the sensor's infrared: no depth (screens, glass, black gloss)


@dataclass(frozen=True)
class Room:
    half_width: float  # side walls at x = +-half_width
    back: float  # back wall at z = -back
    front: float  # front wall at z = +front
    height: float
    wall_color: tuple[float, float, float]
    floor_colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    floor_pattern: str  # "planks", "tiles" or "carpet"
    boxes: tuple[Box, ...] = ()
    texture_seed: int = 0
    light_dir: tuple[float, float, float] = (0.3, 0.8, 0.5)

    def with_boxes(self, boxes: list[Box]) -> Room:
        return replace(self, boxes=self.boxes + tuple(boxes))


def chair(x: float, z: float, yaw: float, seat_height: float, color) -> list[Box]:
    """A chair whose seat is centred at (x, z), facing the direction `yaw` (0 = +z)."""
    fwd = np.array([np.sin(yaw), np.cos(yaw)])
    side = np.array([fwd[1], -fwd[0]])

    def at(f: float, s: float) -> tuple[float, float]:
        return tuple(np.array([x, z]) + f * fwd + s * side)

    parts = [
        (at(0, 0), seat_height - 0.025, (0.44, 0.05, 0.42)),
        (at(-0.2, 0), seat_height + 0.25, (0.44, 0.45, 0.04)),
    ]
    for f in (-0.18, 0.18):
        for s in (-0.19, 0.19):
            parts.append((at(f, s), (seat_height - 0.05) / 2, (0.04, seat_height - 0.05, 0.04)))
    return [Box((cx, cy, cz), size, color, yaw) for (cx, cz), cy, size in parts]


def _pastel(rng: np.random.Generator, sat=(0.1, 0.35), val=(0.6, 0.9)) -> tuple:
    h, s, v = rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return tuple(v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1))


def _furniture(rng: np.random.Generator, room_w: float, back: float) -> list[list[Box]]:
    """Candidate furniture groups, most room-defining first, placed against the walls."""
    wood = _pastel(rng, (0.3, 0.6), (0.3, 0.6))
    groups = []
    # A bed against the back wall or a side wall.
    bx = rng.uniform(-room_w + 1.1, room_w - 1.1)
    sheet = _pastel(rng, (0.0, 0.15), (0.8, 0.95))
    groups.append(
        [
            Box((bx, 0.25, -back + 1.0), (0.95, 0.5, 2.0), wood),
            Box((bx, 0.56, -back + 1.0), (0.93, 0.12, 1.96), sheet),
            Box((bx, 0.55, -back + 0.05), (0.95, 1.1, 0.06), wood),
        ]
    )
    # A table with legs.
    tx, tz = rng.choice([-1, 1]) * rng.uniform(1.4, room_w - 0.7), rng.uniform(-back + 0.5, 0.5)
    table = [Box((tx, 0.73, tz), (1.2, 0.04, 0.7), wood)]
    for dx in (-0.55, 0.55):
        for dz in (-0.3, 0.3):
            table.append(Box((tx + dx, 0.355, tz + dz), (0.05, 0.71, 0.05), wood))
    groups.append(table)
    # A wardrobe, a TV on a low cabinet, a window, shelves, a plant, boxes.
    wx = rng.choice([-1, 1]) * (room_w - 0.3)
    groups.append([Box((wx, 0.9, rng.uniform(-back + 0.6, 0.0)), (0.55, 1.8, 0.9), wood)])
    tvx = rng.uniform(-room_w + 0.8, room_w - 0.8)
    groups.append(
        [
            Box((tvx, 0.3, -back + 0.25), (1.1, 0.6, 0.45), _pastel(rng, (0, 0.2), (0.1, 0.4))),
            Box((tvx, 0.92, -back + 0.2), (0.95, 0.56, 0.06), (0.05, 0.05, 0.06), dark=True),
        ]
    )
    groups.append(
        [
            Box(
                (rng.uniform(-1.5, 1.5), 1.5, -back + 0.02),
                (1.2, 1.1, 0.04),
                (0.75, 0.85, 0.95),
                dark=True,
            )
        ]
    )
    sx = rng.choice([-1, 1]) * (room_w - 0.2)
    shelf = [Box((sx, 0.9, rng.uniform(-back + 0.5, 0.5)), (0.35, 1.8, 1.0), wood)]
    for y in (0.45, 0.9, 1.35):
        shelf.append(
            Box(
                (sx, y + 0.12, shelf[0].center[2] + rng.uniform(-0.3, 0.3)),
                (0.3, 0.22, 0.3),
                _pastel(rng, (0.3, 0.8), (0.3, 0.9)),
            )
        )
    groups.append(shelf)
    px, pz = rng.choice([-1, 1]) * rng.uniform(1.3, room_w - 0.3), rng.uniform(-back + 0.3, 0.0)
    groups.append(
        [
            Box((px, 0.2, pz), (0.35, 0.4, 0.35), _pastel(rng, (0.3, 0.6), (0.3, 0.6))),
            Box((px, 0.75, pz), (0.5, 0.7, 0.5), (0.15, 0.45, 0.15)),
        ]
    )
    for _ in range(3):
        s = rng.uniform(0.3, 0.6)
        x = rng.choice([-1, 1]) * rng.uniform(1.3, room_w - 0.3)
        groups.append(
            [
                Box(
                    (x, s / 2, rng.uniform(-back + 0.3, 0.3)),
                    (s, s, s * 1.2),
                    _pastel(rng, (0.2, 0.6), (0.3, 0.8)),
                    rng.uniform(0, 1.5),
                )
            ]
        )
    return groups


def _footprint(box: Box) -> tuple[float, float, float]:
    """Bounding circle (x, z, radius) on the floor plan."""
    return box.center[0], box.center[2], np.hypot(box.size[0], box.size[2]) / 2


def _overlaps(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    return np.hypot(a[0] - b[0], a[1] - b[1]) < a[2] + b[2]


def make_room(setup: int, difficulty: float, clear_radius: float = 1.3) -> Room:
    """The room of one setup; `difficulty` in [0, 1] decides how cluttered it is."""
    if setup < 1:
        raise SceneError(f"setup must be >= 1, got {setup}")
    rng = np.random.default_rng([0x5CE7E, setup])
    back = rng.uniform(1.3, 3.2)
    half_width = rng.uniform(2.8, 4.0)
    wall = _pastel(rng)
    pattern = str(rng.choice(["planks", "tiles", "carpet"]))
    floor = (_pastel(rng, (0.2, 0.5), (0.35, 0.7)), _pastel(rng, (0.1, 0.5), (0.3, 0.7)))
    groups = _furniture(rng, half_width, back)
    order = rng.permutation(len(groups) - 2) + 2  # the bed and the table are always candidates
    chosen = [groups[0], groups[1]] + [groups[i] for i in order]
    n_groups = 2 + round(difficulty * 6)
    taken = [(0.0, 0.0, clear_radius)]  # the performers' space stays free
    boxes: list[Box] = []
    for group in chosen[:n_groups]:
        feet = [_footprint(b) for b in group]
        if not any(_overlaps(f, t) for f in feet for t in taken):
            boxes += group
            taken += feet
    # Pictures on the back wall (texture for RGB, a centimetre of relief for depth).
    for _ in range(rng.integers(1, 4)):
        w, h = rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.8)
        x, y = rng.uniform(-half_width + 0.5, half_width - 0.5), rng.uniform(1.0, 1.9)
        boxes.append(Box((x, y, -back + 0.01), (w, h, 0.02), _pastel(rng, (0.3, 0.9), (0.3, 1.0))))
    # A low bench between the cameras and the performers hides legs at high difficulty.
    if rng.random() < difficulty - 0.4:
        x, z = rng.uniform(-0.8, 0.8), rng.uniform(1.5, 1.8)
        boxes.append(Box((x, 0.25, z), (rng.uniform(0.8, 1.4), 0.5, 0.4), _pastel(rng)))
    light = rng.normal(size=3) * 0.4 + (0.0, 1.0, 0.6)
    return Room(
        half_width=half_width,
        back=back,
        front=4.6,
        height=rng.uniform(2.5, 3.0),
        wall_color=wall,
        floor_colors=floor,
        floor_pattern=pattern,
        boxes=tuple(boxes),
        texture_seed=int(rng.integers(2**31)),
        light_dir=tuple(light / np.linalg.norm(light)),
    )


def _free(room: Room, x: float, z: float, margin: float = 0.3) -> bool:
    """Whether a tripod at (x, z) stands inside the room and outside every box."""
    if abs(x) > room.half_width - margin or not -room.back + margin < z < room.front - margin:
        return False
    return not any(_overlaps((x, z, margin), _footprint(b)) for b in room.boxes)


def make_camera(
    view: int,
    setup: int,
    rng: np.random.Generator,
    difficulty: float,
    depth_size: tuple[int, int],
    color_size: tuple[int, int],
    room: Room | None = None,
    depth_fov: tuple[float, float] | None = None,
) -> Camera:
    """Camera `view` (1..3) of a setup: NTU-like heights and distances, jittered by difficulty.

    Given the `room`, the camera moves towards the performers until it stands inside the room
    and clear of the furniture. `depth_fov` (horizontal, vertical degrees; a camera profile's,
    `synth.cameras`) sets the depth camera's focal lengths; without it the depth camera has
    square pixels and the Kinect v2's horizontal field of view at any size.
    """
    if view not in VIEW_ANGLES_DEG:
        raise SceneError(f"camera view must be 1, 2 or 3, got {view}")
    srng = np.random.default_rng([0xCA3E7A, setup])
    height, distance = srng.uniform(0.8, 1.5), srng.uniform(2.4, 3.2)
    spread = 5.0 + 15.0 * difficulty  # degrees of view jitter
    angle = np.radians(VIEW_ANGLES_DEG[view] + rng.uniform(-spread, spread))
    distance *= 1.0 + rng.uniform(-0.1, 0.15) * (0.5 + difficulty)
    direction = np.array([np.sin(angle), np.cos(angle)])
    while room is not None and distance > 1.5 and not _free(room, *(distance * direction)):
        distance *= 0.95
    position = np.array([distance * np.sin(angle), height, distance * np.cos(angle)])
    aim = np.array([rng.uniform(-0.3, 0.3) * difficulty, 0.85 + rng.uniform(-0.1, 0.1), 0.0])
    (h, w), (hc, wc) = depth_size, color_size
    return Camera(
        position=position,
        rotation=look_at(position, aim),
        depth=(
            Intrinsics.from_fov(w, h, DEPTH_HFOV_DEG)
            if depth_fov is None
            else Intrinsics.from_fovs(w, h, *depth_fov)
        ),
        color=Intrinsics.from_fov(wc, hc, COLOR_HFOV_DEG),
    )


# --- ray casting -------------------------------------------------------------------------------


@dataclass
class Hits:
    t: np.ndarray  # [H, W] camera z of the first hit
    surface: np.ndarray  # [H, W] int: FLOOR..RIGHT or 6 + box index
    normal: np.ndarray  # [H, W, 3] world normal
    point: np.ndarray  # [H, W, 3] world hit point


def cast(room: Room, origin: np.ndarray, dirs: np.ndarray) -> Hits:
    """First hit of rays `origin + t * dirs` (world; t is camera z) with walls and boxes."""
    planes = [
        (1, 0.0, 1.0),
        (1, room.height, -1.0),
        (2, -room.back, 1.0),
        (2, room.front, -1.0),
        (0, room.half_width, -1.0),
        (0, -room.half_width, 1.0),
    ]
    shape = dirs.shape[:2]
    t = np.full(shape, np.inf)
    surface = np.zeros(shape, dtype=np.int32)
    normal = np.zeros((*shape, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, (axis, value, sign) in enumerate(planes):
            ti = (value - origin[axis]) / dirs[..., axis]
            hit = (ti > 0) & (ti < t)
            t[hit], surface[hit] = ti[hit], i
            normal[hit] = np.eye(3)[axis] * sign
        for i, box in enumerate(room.boxes):
            c, s = np.cos(-box.yaw), np.sin(-box.yaw)
            rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # world -> box frame
            o = rot @ (origin - np.array(box.center))
            d = dirs @ rot.T
            d = np.where(np.abs(d) < 1e-12, 1e-12, d)
            half = np.array(box.size) / 2
            t1, t2 = (-half - o) / d, (half - o) / d
            near, far = np.minimum(t1, t2), np.maximum(t1, t2)
            t_in, t_out = near.max(-1), far.min(-1)
            hit = (t_in > 0) & (t_in <= t_out) & (t_in < t)
            t[hit], surface[hit] = t_in[hit], 6 + i
            axis = near.argmax(-1)[hit]
            n_box = np.eye(3)[axis] * -np.sign(np.take_along_axis(d[hit], axis[:, None], 1))
            normal[hit] = n_box @ rot  # back to world
    return Hits(t, surface, normal, origin + t[..., None] * dirs)


def world_rays(camera: Camera, intrinsics: Intrinsics) -> np.ndarray:
    return intrinsics.rays() @ camera.rotation


def background_depth(room: Room, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Depth [H, W] (metres, float32) of the empty room, and its infrared-dark mask."""
    hits = cast(room, camera.position, world_rays(camera, camera.depth))
    dark = np.array([False] * 6 + [b.dark for b in room.boxes])[hits.surface]
    return hits.t.astype(np.float32), dark


def empty_room_mm(room: Room, camera: Camera, valid_m: tuple[float, float]) -> np.ndarray:
    """uint16 [H, W] millimetres, 0 = no reading: the empty room, noise-free, as a depth
    camera whose valid range is `valid_m` (metres, ends included) reads it. This is what an
    installer's reference capture (the per-pixel median of many frames) converges to, so it
    serves as the camera's empty-room reference (core.foreground). Infrared-dark surfaces keep
    their depth: they drop most readings, not all, and the reference is the room's geometry.
    One ray cast per pixel: no people are rendered."""
    z, _ = background_depth(room, camera)
    near, far = valid_m
    valid = (z >= near) & (z <= far)
    return np.where(valid, np.rint(z * 1000.0), 0).astype(np.uint16)


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of linear interpolation (pixel centres aligned, edges held)."""
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.minimum(np.floor(x).astype(int), n_in - 2) if n_in > 1 else np.zeros(n_out, int)
    w = np.zeros((n_out, n_in), dtype=np.float32)
    w[np.arange(n_out), lo] = 1 - (x - lo)
    if n_in > 1:
        w[np.arange(n_out), lo + 1] = x - lo
    return w


def upsample(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [..., h, w] to [..., height, width]."""
    wy = interpolation_matrix(a.shape[-2], height)
    wx = interpolation_matrix(a.shape[-1], width)
    return wy @ a @ wx.T


def _value_noise(rng: np.random.Generator, size: int = 64, cells: int = 8) -> np.ndarray:
    """A smooth tileable random texture in [0, 1]."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    tex = upsample(np.tile(coarse, (3, 3)), 3 * size, 3 * size)[size : 2 * size, size : 2 * size]
    return (tex - tex.min()) / max(tex.max() - tex.min(), 1e-6)


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    n = tex.shape[0]
    return tex[(v * scale).astype(np.int64) % n, (u * scale).astype(np.int64) % n]


def background_rgb(room: Room, camera: Camera, brightness: float) -> np.ndarray:
    """Colour [Hc, Wc, 3] float32 in 0..1 of the empty room under its light."""
    hits = cast(room, camera.color_origin(), world_rays(camera, camera.color))
    rng = np.random.default_rng(room.texture_seed)
    fine, coarse = _value_noise(rng, cells=16), _value_noise(rng, cells=4)
    p, s = hits.point, hits.surface
    rgb = np.empty((*s.shape, 3), dtype=np.float32)

    # Floor.
    x, z = p[..., 0], p[..., 2]
    a, b = (np.array(c, dtype=np.float32) for c in room.floor_colors)
    if room.floor_pattern == "planks":
        plank = np.floor(x / 0.18)
        row = np.floor(z / 1.2 + 0.37 * plank)
        shade = (np.sin(plank * 12.9898 + row * 78.233) * 43758.5453) % 1.0
        grain = _sample(fine, x * 8, z, 6.0)
        floor = a * (0.8 + 0.35 * shade[..., None] + 0.1 * grain[..., None])
        seam = ((x / 0.18) % 1.0 < 0.06) | ((z / 1.2 + 0.37 * plank) % 1.0 < 0.02)
        floor[seam] *= 0.6
    elif room.floor_pattern == "tiles":
        checker = ((np.floor(x / 0.5) + np.floor(z / 0.5)) % 2)[..., None]
        floor = a + checker * (b - a)
        grout = ((x / 0.5) % 1.0 < 0.04) | ((z / 0.5) % 1.0 < 0.04)
        floor[grout] = 0.85
    else:
        floor = a * (0.85 + 0.3 * _sample(fine, x, z, 40.0)[..., None])
    rgb[:] = floor

    # Walls and ceiling: plaster texture; a skirting board at the bottom.
    u = np.where((s == LEFT) | (s == RIGHT), z, x)
    wall = (
        np.array(room.wall_color, dtype=np.float32)
        * (
            0.9
            + 0.1 * _sample(coarse, u, p[..., 1], 20.0)
            + 0.05 * _sample(fine, u, p[..., 1], 60.0)
        )[..., None]
    )
    is_wall = (s >= BACK) & (s <= RIGHT)
    rgb[is_wall] = wall[is_wall]
    rgb[is_wall & (p[..., 1] < 0.1)] *= 0.55
    rgb[s == CEILING] = 0.92

    # Boxes: their colour with a little texture.
    if room.boxes:
        colors = np.array([(0, 0, 0)] * 6 + [b.color for b in room.boxes], dtype=np.float32)
        tex = 0.85 + 0.15 * _sample(fine, x + z, p[..., 1], 30.0)
        is_box = s >= 6
        rgb[is_box] = (colors[s] * tex[..., None])[is_box]

    light = np.clip(hits.normal @ np.array(room.light_dir), 0, 1)
    shade = 0.55 + 0.45 * light
    return np.clip(rgb * (brightness * shade)[..., None], 0, 1).astype(np.float32)
