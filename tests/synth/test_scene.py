import numpy as np
import pytest

from synth.scene import (
    BACK,
    FLOOR,
    Box,
    Camera,
    Intrinsics,
    Room,
    SceneError,
    background_depth,
    cast,
    look_at,
    make_camera,
    make_room,
    world_rays,
)


def _empty_room(**kw) -> Room:
    args = dict(half_width=3.0, back=2.0, front=5.0, height=2.8, wall_color=(0.8, 0.8, 0.8))
    args |= dict(floor_colors=((0.5, 0.4, 0.3), (0.4, 0.3, 0.2)), floor_pattern="tiles")
    return Room(**(args | kw))


def _level_camera(z=3.0, height=1.2, size=(48, 64)) -> Camera:
    pos = np.array([0.0, height, z])
    intr = Intrinsics.from_fov(size[1], size[0], 70.6)
    return Camera(pos, look_at(pos, np.array([0.0, height, 0.0])), intr, intr)


def test_look_at_is_a_right_handed_rotation_onto_the_target():
    pos, target = np.array([1.0, 1.5, 3.0]), np.array([0.0, 0.8, 0.0])
    r = look_at(pos, target)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r @ (target - pos), [0, 0, np.linalg.norm(target - pos)], atol=1e-12)
    assert (r @ [0, 1, 0])[1] > 0.9  # world up is camera up


def test_projection_follows_the_kinect_formula_and_inverts_rays():
    intr = Intrinsics.from_fov(128, 96, 70.6)
    assert intr.fx == pytest.approx(64 / np.tan(np.radians(35.3)))
    u, v = intr.project(np.array([0.5, 0.25, 2.0]))
    assert u == pytest.approx(intr.cx + intr.fx * 0.25)  # x (sensor's left) -> larger u
    assert v == pytest.approx(intr.cy - intr.fy * 0.125)  # y up -> smaller v
    rays = intr.rays()
    xy = intr.project(rays * 2.5)
    np.testing.assert_allclose(xy[5, 7], (7, 5), atol=1e-9)


def test_cast_hits_floor_and_back_wall_at_the_analytic_depth():
    cam, room = _level_camera(), _empty_room()
    hits = cast(room, cam.position, world_rays(cam, cam.depth))
    h, w = hits.t.shape
    centre = hits.t[(h - 1) // 2, (w - 1) // 2 : w // 2 + 1]
    # The central ray is level (cy is between two rows), so it reaches the back wall.
    assert hits.surface[h // 2 - 1, w // 2] == BACK
    assert centre.mean() == pytest.approx(3.0 + 2.0, rel=0.02)
    v = h - 1
    assert hits.surface[v, w // 2] == FLOOR
    assert hits.t[v, w // 2] == pytest.approx(1.2 / ((v - cam.depth.cy) / cam.depth.fy))


@pytest.mark.parametrize("yaw", [0.0, np.pi / 4])
def test_cast_hits_boxes_including_turned_ones(yaw):
    cam = _level_camera(size=(49, 65))  # odd sizes: a pixel centre on the optical axis
    box = Box((0.0, 1.2, 0.0), (0.6, 0.6, 0.6), (1, 0, 0), yaw=yaw, dark=True)
    room = _empty_room(boxes=(box,))
    depth, dark = background_depth(room, cam)
    h, w = depth.shape
    # Facing a face: 3.0 - 0.3. Facing an edge (turned 45 deg): 3.0 - 0.3 * sqrt(2).
    near = 3.0 - 0.3 * (np.sqrt(2) if yaw else 1.0)
    assert depth[h // 2, w // 2] == pytest.approx(near, abs=0.02)
    assert dark[h // 2, w // 2] and not dark[0, 0]


def test_rooms_are_fixed_per_setup_and_keep_the_performers_space_clear():
    a, b = make_room(3, 0.5), make_room(3, 0.5)
    assert a == b
    assert make_room(4, 0.5) != a
    for setup in range(1, 8):
        room = make_room(setup, 1.0)
        for box in room.boxes:
            if box.size[1] > 0.1 and box.center[2] < 1.4:  # furniture, not the far bench
                radius = np.hypot(box.size[0], box.size[2]) / 2
                assert np.hypot(box.center[0], box.center[2]) > 1.3 - radius + 1e-9
    assert len(make_room(5, 1.0).boxes) >= len(make_room(5, 0.0).boxes)


def test_cameras_look_at_the_spot_from_their_view_angle():
    rng = np.random.default_rng(0)
    for view, side in ((1, 0.0), (2, 1.0), (3, -1.0)):  # front, then +-45 degrees
        cam = make_camera(view, 1, rng, 0.0, (48, 64), (60, 80))
        distance = np.hypot(cam.position[0], cam.position[2])
        assert 2.0 < distance < 3.8
        assert abs(cam.position[0] / distance - side * np.sin(np.pi / 4)) < 0.15
        spot = cam.depth.project(cam.to_camera(np.array([0.0, 0.9, 0.0])))
        assert abs(spot[0] - cam.depth.cx) < 20 and abs(spot[1] - cam.depth.cy) < 20
    with pytest.raises(SceneError, match="camera view"):
        make_camera(4, 1, rng, 0.0, (48, 64), (60, 80))


def test_cameras_stand_inside_their_room_and_see_it():
    for setup in range(1, 13):
        room = make_room(setup, 1.0)
        for view in (1, 2, 3):
            cam = make_camera(
                view, setup, np.random.default_rng(setup), 1.0, (24, 32), (24, 32), room
            )
            x, _, z = cam.position
            assert abs(x) < room.half_width and -room.back < z < room.front
            depth, _ = background_depth(room, cam)
            assert (depth > 0.5).mean() > 0.9  # no wall or wardrobe right in front of the lens
