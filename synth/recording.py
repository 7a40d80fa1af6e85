"""What a Kinect-like camera records of a performance: joints, depth, body mask and colour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.performance import Performance
from synth.render import (
    HEAD,
    MATERIALS,
    PANTS,
    SHIRT,
    SHOES,
    SKIN,
    SLEEVE,
    Sensor,
    capsule_ends,
    capsule_radii,
    depth_frames,
    jitter_joints,
    rasterize,
    rgb_frames,
)
from synth.scene import COLOR_OFFSET, Camera, Room, background_depth, background_rgb
from synth.skeleton import J
from synth.subjects import Subject


@dataclass
class Recording:
    """One video: what the dataset writers store, in Kinect v2 conventions.

    Camera space is the depth camera's: x to the sensor's left, y up, z away from the sensor,
    metres. Pixel coordinates are at the rendered sizes (scale them for the real sensors'
    512x424 depth and 1920x1080 colour if a format needs those).
    """

    joints: np.ndarray  # float32 [T, B, 25, 3] camera space, metres (0 where not tracked)
    tracked: np.ndarray  # bool [T, B]
    depth_xy: np.ndarray  # float32 [T, B, 25, 2] joint pixels (x, y) in the depth image
    color_xy: np.ndarray  # float32 [T, B, 25, 2] joint pixels (x, y) in the RGB image
    depth: np.ndarray  # uint16 [T, H, W] millimetres, 0 = invalid
    body_mask: np.ndarray  # bool [T, H, W] person pixels (all of them valid depth)
    rgb: np.ndarray  # uint8 [T, Hc, Wc, 3] RGB order
    fps: float
    segments: list[tuple[int, int, int]]  # (label, start, end inclusive), labels 1-based
    camera: int  # view 1..3
    subject: int  # performer id (1-based)
    setup: int = 1
    replication: int = 1
    depth_intrinsics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # fx fy cx cy
    color_intrinsics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    color_offset: tuple[float, float, float] = COLOR_OFFSET  # colour camera in camera space

    @property
    def num_frames(self) -> int:
        return len(self.depth)

    @property
    def num_bodies(self) -> int:
        return self.joints.shape[1]


def _palette(person: Subject) -> tuple[np.ndarray, np.ndarray]:
    """Per-capsule clothing colours and hair colours [N, 3] of one person."""
    sleeve = person.shirt if person.long_sleeves else person.skin
    table = {SHIRT: person.shirt, PANTS: person.pants, SKIN: person.skin, SHOES: person.shoes}
    table |= {HEAD: person.skin, SLEEVE: sleeve}
    colors = np.array([table[m] for m in MATERIALS], dtype=np.float32)
    return colors, np.broadcast_to(np.array(person.hair, dtype=np.float32), colors.shape)


def record(
    performance: Performance,
    room: Room,
    camera: Camera,
    rng: np.random.Generator,
    difficulty: float,
    *,
    view: int,
    setup: int = 1,
    replication: int = 1,
    chunk: int = 32,
) -> Recording:
    """Film a performance with `camera` (view number `view`) in `room`."""
    sensor = Sensor.for_difficulty(difficulty)
    bg_depth, dark = background_depth(room, camera)
    brightness = rng.uniform(0.85 - 0.3 * difficulty, 1.15)
    bg_rgb = background_rgb(room, camera, brightness)
    people = performance.people
    radii = [capsule_radii(p.body.height, p.body.girth) for p in people]
    ra, rb = np.concatenate([r[0] for r in radii]), np.concatenate([r[1] for r in radii])
    colors, hair = (np.concatenate(x) for x in zip(*[_palette(p) for p in people], strict=True))

    cam = camera.to_camera(performance.joints)  # [T, B, 25, 3]
    n, h, w = len(cam), camera.depth.height, camera.depth.width
    depth = np.empty((n, h, w), dtype=np.uint16)
    mask = np.empty((n, h, w), dtype=bool)
    rgb = np.empty((n, camera.color.height, camera.color.width, 3), dtype=np.uint8)
    occluded = np.zeros(cam.shape[:3], dtype=bool)
    noise_std = 2.0 + 6.0 * difficulty  # colour sensor noise, 0..255 units
    bank = rng.normal(0, noise_std, (8, *rgb.shape[1:])).astype(np.float32)
    t = np.arange(n) / performance.fps
    gain = 1.0 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3))

    for s in range(0, n, chunk):
        part = slice(s, s + chunk)
        raster = rasterize(*capsule_ends(cam[part]), ra, rb, camera.depth)
        person = raster.z < bg_depth
        clean = np.minimum(raster.z, bg_depth)
        frames = depth_frames(clean, dark & ~person, sensor, rng)
        depth[part], mask[part] = frames, person & (frames > 0)
        # A joint well behind the visible surface at its pixel is occluded.
        px = np.rint(camera.depth.project(cam[part])).astype(np.int64)
        px[..., 0], px[..., 1] = px[..., 0].clip(0, w - 1), px[..., 1].clip(0, h - 1)
        frame = np.arange(len(clean))[:, None, None]
        occluded[part] = cam[part][..., 2] - clean[frame, px[..., 1], px[..., 0]] > 0.2
        raster = rasterize(*capsule_ends(cam[part] - COLOR_OFFSET), ra, rb, camera.color)
        noise = bank[rng.integers(len(bank), size=len(clean))]
        rgb[part] = rgb_frames(bg_rgb, raster, colors, hair, gain[part], noise)

    joints = jitter_joints(cam, occluded, sensor, rng)
    depth_xy = camera.depth.project(joints)
    color_xy = camera.color.project(joints - np.array(COLOR_OFFSET))
    trunk = joints[:, :, [J["SpineBase"], J["SpineShoulder"]]]
    trunk_xy = depth_xy[:, :, [J["SpineBase"], J["SpineShoulder"]]]
    tracked = (
        (trunk[..., 2] > sensor.min_depth)
        & (trunk[..., 2] < sensor.max_depth)
        & (trunk_xy[..., 0] >= 0)
        & (trunk_xy[..., 0] <= w - 1)
        & (trunk_xy[..., 1] >= 0)
        & (trunk_xy[..., 1] <= h - 1)
    ).all(-1)
    keep = tracked[..., None, None]
    return Recording(
        joints=np.where(keep, joints, 0).astype(np.float32),
        tracked=tracked,
        depth_xy=np.where(keep, depth_xy, 0).astype(np.float32),
        color_xy=np.where(keep, color_xy, 0).astype(np.float32),
        depth=depth,
        body_mask=mask,
        rgb=rgb,
        fps=performance.fps,
        segments=list(performance.segments),
        depth_intrinsics=camera.depth.as_tuple(),
        color_intrinsics=camera.color.as_tuple(),
        camera=view,
        subject=people[0].id,
        setup=setup,
        replication=replication,
    )
