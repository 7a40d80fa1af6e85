import numpy as np
import pytest

from synth.cameras import CAMERAS, camera_profile
from synth.generate import detection_video
from synth.render import rasterize
from synth.scene import Intrinsics, SceneError


def fov_deg(size: int, focal: float) -> float:
    """The field of view from the outer edge of the first pixel to that of the last."""
    return float(np.degrees(2 * np.arctan(size / 2 / focal)))


@pytest.mark.parametrize(
    ("name", "shape", "fov"),
    [
        ("d435", (480, 848), (87.0, 58.0)),
        ("d435-vga", (480, 640), (75.0, 62.0)),
        ("d455", (480, 848), (87.0, 58.0)),
        ("kinect-v2", (424, 512), (70.6, 60.0)),
    ],
)
def test_profiles_have_the_datasheet_size_and_fields_of_view(name, shape, fov):
    camera = camera_profile(name)
    assert (camera.height, camera.width) == shape and camera.fov == fov
    intr = camera.intrinsics(*shape)
    assert (intr.height, intr.width) == shape
    assert fov_deg(intr.width, intr.fx) == pytest.approx(fov[0], abs=1e-9)
    assert fov_deg(intr.height, intr.fy) == pytest.approx(fov[1], abs=1e-9)
    assert (intr.cx, intr.cy) == ((shape[1] - 1) / 2, (shape[0] - 1) / 2)


@pytest.mark.parametrize("name", sorted(CAMERAS))
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 0.1])
def test_scaled_profiles_keep_the_aspect_ratio_and_fields_of_view(name, scale):
    camera = CAMERAS[name]
    h, w = camera.scaled_size(scale)
    assert (h, w) == (round(camera.height * scale), round(camera.width * scale))
    camera.check_size((h, w))  # rounding keeps the aspect ratio to within a pixel
    intr = camera.intrinsics(h, w)
    assert fov_deg(w, intr.fx) == pytest.approx(camera.hfov_deg, abs=1e-9)
    assert fov_deg(h, intr.fy) == pytest.approx(camera.vfov_deg, abs=1e-9)
    # The outermost pixel centres look along the same directions at every scale, up to the
    # half pixel: x/z = tan(hfov/2) * (w - 1) / w.
    rays = intr.rays()
    assert -rays[0, 0, 0] == pytest.approx(np.tan(np.radians(camera.hfov_deg / 2)) * (w - 1) / w)
    assert rays[0, 0, 1] == pytest.approx(np.tan(np.radians(camera.vfov_deg / 2)) * (h - 1) / h)


def test_sizes_of_another_aspect_ratio_and_unknown_cameras_are_refused():
    kinect = camera_profile("kinect-v2")
    kinect.check_size((53, 64))  # 64 * 424 / 512 = 53.0
    kinect.check_size((106, 128))
    with pytest.raises(SceneError, match="does not have the kinect-v2 aspect ratio 424:512"):
        kinect.check_size((64, 64))
    with pytest.raises(SceneError, match="unknown camera 'd999'; known: d435"):
        camera_profile("d999")
    with pytest.raises(SceneError, match=r"camera scale must be in \(0, 1\]"):
        kinect.scaled_size(1.5)


def test_non_square_pixels_render_a_sphere_as_an_ellipse():
    """fx != fy: a sphere on the optical axis spans 2 fx r / z columns and 2 fy r / z rows."""
    intr = Intrinsics.from_fovs(129, 97, 90.0, 40.0)  # fx 64.5, fy 133.2
    z, r = 2.0, 0.2
    sphere = np.array([[[0.0, 0.0, z]]])
    out = rasterize(sphere, sphere, [r], [r], intr)
    drawn = np.isfinite(out.z[0])
    cols, rows = drawn[48].sum(), drawn[:, 64].sum()
    assert abs(cols - 2 * intr.fx * r / z) <= 1
    assert abs(rows - 2 * intr.fy * r / z) <= 1
    assert drawn.sum() == pytest.approx(np.pi * (intr.fx * r / z) * (intr.fy * r / z), rel=0.1)
    assert out.z[0, 48, 64] == pytest.approx(z - r, abs=1e-4)


def test_a_video_filmed_with_a_profile_records_its_intrinsics():
    camera = camera_profile("d435-vga")
    size = camera.scaled_size(0.05)  # 24x32
    rec = detection_video(seed=1, subject=1, camera=2, n_actions=1, size=size, color_size=(16, 16),
                          depth_fov=camera.fov)  # fmt: skip
    assert rec.depth.shape[1:] == size
    np.testing.assert_allclose(rec.depth_intrinsics, camera.intrinsics(*size).as_tuple())
    assert (rec.depth > 0).mean() > 0.5  # the room is seen
