"""Depth camera profiles: the resolution and field of view of the sensors the service serves.

`gd-synth --camera NAME` renders depth as that camera sees it: its aspect ratio and both
fields of view, at its resolution or scaled down for speed (`--camera-scale`, or `--size`
with the same aspect ratio). Focal lengths come from each axis' field of view at the rendered
size (`Intrinsics.from_fovs`), so a scaled-down frame covers exactly what the full one does.

Fields of view are the makers' nominal figures (single units vary by about ±3°):
- RealSense D435: Intel RealSense D400 Series Product Family Datasheet (May 2020 edition),
  Table 3-42 "Depth camera SKU properties": depth FOV HD (16:9) H 87° V 58°, VGA (4:3)
  H 75° V 62°. The 4:3 modes see a narrower, taller part of the imager than the 16:9 ones.
- RealSense D455: Intel's published depth FOV, H 87° V 58° (16:9 modes; quoted e.g. in
  IntelRealSense/realsense-ros issue 2790); 848x480 is the D4xx cameras' recommended depth
  resolution.
- Kinect v2 (the camera of NTU RGB+D and PKU-MMD): Microsoft's Kinect for Windows v2
  specifications, depth 512x424, 70.6° x 60°.
"""

from __future__ import annotations

from dataclasses import dataclass

from synth.scene import Intrinsics, SceneError


@dataclass(frozen=True)
class CameraProfile:
    name: str
    label: str
    height: int  # native depth resolution
    width: int
    hfov_deg: float
    vfov_deg: float

    def scaled_size(self, scale: float) -> tuple[int, int]:
        """(height, width) of the native size times `scale`, rounded."""
        if not 0 < scale <= 1:
            raise SceneError(f"camera scale must be in (0, 1], got {scale}")
        return max(1, round(self.height * scale)), max(1, round(self.width * scale))

    def check_size(self, size: tuple[int, int]) -> None:
        """Raise unless (height, width) has this camera's aspect ratio, to within rounding:
        one side must be the other side times the aspect, rounded."""
        h, w = size
        if h != round(w * self.height / self.width) and w != round(h * self.width / self.height):
            raise SceneError(
                f"size {h}x{w} does not have the {self.name} aspect ratio "
                f"{self.height}:{self.width}; e.g. {h}x{round(h * self.width / self.height)} "
                f"or {round(w * self.height / self.width)}x{w}"
            )

    @property
    def fov(self) -> tuple[float, float]:
        return self.hfov_deg, self.vfov_deg

    def intrinsics(self, height: int, width: int) -> Intrinsics:
        return Intrinsics.from_fovs(width, height, self.hfov_deg, self.vfov_deg)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.label}, {self.width}x{self.height}, "
            f"{self.hfov_deg:g}x{self.vfov_deg:g} deg"
        )


CAMERAS: dict[str, CameraProfile] = {
    p.name: p
    for p in (
        CameraProfile("d435", "RealSense D435 depth, 16:9", 480, 848, 87.0, 58.0),
        CameraProfile("d435-vga", "RealSense D435 depth, 4:3 VGA", 480, 640, 75.0, 62.0),
        CameraProfile("d455", "RealSense D455 depth, 16:9", 480, 848, 87.0, 58.0),
        CameraProfile("kinect-v2", "Kinect v2 depth (NTU RGB+D, PKU-MMD)", 424, 512, 70.6, 60.0),
    )
}


def camera_profile(name: str) -> CameraProfile:
    try:
        return CAMERAS[name]
    except KeyError:
        raise SceneError(f"unknown camera {name!r}; known: {', '.join(CAMERAS)}") from None
