"""Write a bundle's model card (`README.md`) from its `model.json`, so the two never disagree.

Run: python -m export.card BUNDLE [--command "how it was built"]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.bundle import BundleError, load_bundle
from core.files import atomic_write_text


def render_card(bundle_dir: Path, command: str) -> str:
    b = load_bundle(bundle_dir)
    spec = b.clip
    size = sum((b.root / f.path).stat().st_size for f in b.files.values())
    lines = [
        f"# Model card: {b.name} {b.version}",
        "",
        "A depth-only action detector trained with graph distillation on the synthetic "
        "benchmark (`gd-synth`), exported by `gd-export`. It sees depth alone; skeleton and "
        "other modalities taught it during training only.",
        "",
        "## Rebuild",
        "",
        "```sh",
        command,
        "```",
        "",
        "## Input",
        "",
        f"- depth uint16 mm, valid {spec.depth_min_mm}-{spec.depth_max_mm} mm, resampled to "
        f"{spec.kept_fps:g} fps (source {spec.source_fps:g} fps / {spec.downsample})",
        f"- clips of {spec.clip_len} frames ({spec.clip_seconds:g} s) at "
        f"{spec.height}x{spec.width}, every {spec.clip_step} frames; windows of "
        f"{spec.window} clips, step {spec.window_step} offline",
        f"- sequence encoder: {'causal' if b.causal else 'bidirectional'}; activity "
        f"threshold {b.activity_threshold}",
        f"- files: {size / 1e6:.1f} MB",
        "",
        f"## Classes ({b.num_classes} actions, 0 = background)",
        "",
        ", ".join(f"{i} {name}" for i, name in enumerate(b.classes)),
        "",
        "## Held-out metrics (target test videos, depth only)",
        "",
        "```json",
        _json(b.metrics),
        "```",
        "",
        "## Training",
        "",
        "```json",
        _json(b.training),
        "```",
        "",
    ]
    return "\n".join(lines)


def _json(value: object) -> str:
    import json

    return json.dumps(value, indent=1, default=str)[:6000]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.card", description=__doc__.split("\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--command", default="make default-model", help="how to rebuild it")
    args = p.parse_args(argv)
    try:
        atomic_write_text(args.bundle / "README.md", render_card(args.bundle, args.command))
    except BundleError as e:
        print(f"export.card: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.bundle / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
