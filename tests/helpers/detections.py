"""Random detection test sets for the metric tests (core.metrics against the official code)."""

import numpy as np


def random_test_set(rng: np.random.Generator, n_videos: int, num_classes: int):
    """Small videos with same-class neighbours, jittered and duplicated detections, integer
    frames (so tIoU ties happen), few distinct confidences (so confidence ties happen), empty
    ground truth files and videos without a detection file."""
    gt, pred = {}, {}
    for v in range(n_videos):
        video = f"{rng.integers(100):02d}_{v}"
        n = int(rng.integers(0, 7))
        start = rng.integers(0, 300, n)
        rows = np.stack(
            [
                rng.integers(1, num_classes + 1, n),
                start,
                start + rng.integers(1, 60, n),
                np.ones(n),
            ],
            axis=1,
        )
        gt[video] = rows.astype(np.float64).reshape(-1, 4)
        if rng.random() < 0.15:
            continue
        props = []
        for _ in range(rng.integers(0, 12)):
            if n and rng.random() < 0.7:
                label, s, e, _ = rows[rng.integers(n)]
                if rng.random() < 0.2:
                    label = rng.integers(1, num_classes + 1)
                s, e = s + rng.integers(-10, 11), e + rng.integers(-10, 11)
                e = max(e, s + 1)
            else:
                label, s = rng.integers(1, num_classes + 1), rng.integers(0, 300)
                e = s + rng.integers(1, 60)
            conf = rng.integers(1, 6) / 10 if rng.random() < 0.7 else rng.random()
            props.append([label, s, e, conf])
            if rng.random() < 0.1:
                props.append(list(props[-1]))
        pred[video] = np.array(props, dtype=np.float64).reshape(-1, 4)
    return gt, pred
