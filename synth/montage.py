"""A picture of the benchmark: depth (colour-mapped, joints dotted) beside RGB, a few samples.

python -m synth.montage --out docs/img/synth_montage.png
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from synth.generate import ACTIONS, SOURCE_CLASSES, classification_sample
from synth.recording import Recording

# (action name, subject, camera, setup, fraction of the action's segment to show)
SHOTS = (
    ("drink water", 1, 1, 1, 0.5),
    ("phone call", 2, 2, 2, 0.5),
    ("sit down", 3, 3, 3, 0.95),
    ("falling down", 4, 1, 4, 0.95),
    ("pick up", 5, 2, 5, 0.5),
    ("hand waving", 6, 3, 6, 0.5),
    ("push other person", 7, 1, 7, 0.55),
    ("hugging", 8, 2, 8, 0.6),
)


def depth_image(depth: np.ndarray, xy: np.ndarray | None = None) -> np.ndarray:
    """uint16 mm -> BGR colour map (near warm, far cool, invalid black), joints as dots."""
    scaled = np.clip((depth.astype(np.float32) - 500) / 4000 * 255, 0, 255).astype(np.uint8)
    out = cv2.applyColorMap(255 - scaled, cv2.COLORMAP_JET)
    out[depth == 0] = 0
    if xy is not None:
        for x, y in np.rint(xy).astype(int):
            cv2.circle(out, (x, y), 1, (255, 255, 255), -1)
    return out


def tile(rec: Recording, frame: int, scale: int = 2) -> np.ndarray:
    h = rec.depth.shape[1]
    xy = rec.depth_xy[frame][rec.tracked[frame]].reshape(-1, 2)
    d = depth_image(rec.depth[frame], xy)
    hc, wc = rec.rgb.shape[1:3]
    rgb = cv2.resize(np.ascontiguousarray(rec.rgb[frame][..., ::-1]), (round(h * wc / hc), h))
    row = np.concatenate([d, np.full((h, 2, 3), 255, np.uint8), rgb], 1)
    return cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def montage(columns: int = 2) -> np.ndarray:
    tiles = []
    for name, subject, camera, setup, when in SHOTS:
        action = SOURCE_CLASSES.index(ACTIONS.index(name)) + 1
        rec = classification_sample(action, subject, camera, setup=setup, seed=7)
        _, start, end = rec.segments[0]
        image = tile(rec, round(start + when * (end - start)))
        cv2.putText(image, name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(image)
    rows = [np.concatenate(tiles[i : i + columns], 1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img/synth_montage.png")
    args = parser.parse_args(argv)
    cv2.imwrite(args.out, montage())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
