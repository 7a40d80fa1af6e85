"""The model bundle: what `gd-export` writes and the server runs (design.md §8).

```
<bundle>/model.json            format_version, name, version, classes (0 = background),
                               clip (ClipSpec), feature_dim, postprocess, sequence, files
                               {key: {path, sha256}}, training provenance, metrics
<bundle>/visual_encoder.onnx   float32[B, T_c, H, W]  -> float32[B, D]
<bundle>/sequence_encoder.onnx float32[B, T_w, D]     -> float32[B, T_w, L+1] probabilities
<bundle>/weights.pt            the detector's PyTorch weights for `gd-train finetune`
                               (model.json `training.weights`); never read by the server
<bundle>/engines/              optional TensorRT plans, one folder per GPU + TensorRT version
                               (`engine_folder_name`), not listed in `files`
```

`precision` says how each encoder's weights are stored (`fp32`, `fp16` or `int8`; absent =
`fp32`). Every variant keeps float32 inputs and outputs, so a server runs any of them alike; a
deployment picks a precision by pointing at that variant's bundle.

`postprocess.score_delay` (absent = 0) is the number of clips of future context a live clip's
scores wait for; with it, `ModelBundle.live_latency_s` is the latency a stream should expect.

model.json never holds a path of the machine that wrote it: `write_bundle_json` rewrites every
absolute path in it (`portable`), relative to the working directory, or as `.../name` outside
it, and logs which fields it rewrote.

`load_bundle` checks everything numpy can: the schema, the clip spec, that every listed file
exists with its recorded sha256. Encoder input/output shapes are read by whoever opens the
ONNX files (ONNX Runtime in the server, onnx in export) and checked here by
`check_encoder_shapes`, so the rules live in one place. Every error says which part is wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.clip import ClipSpec, ClipSpecError
from core.files import atomic_write_text

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
REQUIRED_FILES = ("visual_encoder", "sequence_encoder")
PRECISIONS = ("fp32", "fp16", "int8")
ENGINES_DIR = "engines"
Dim = int | str | None  # a static size, or a dynamic axis (its name, or None)
# An absolute POSIX path inside a string: a "/" that starts a word (not "a/b", "1/3" or the
# "//" of a URL) followed by a path.
ABSOLUTE_PATH = re.compile(r"(?<![\w./:~-])/(?![/\s])[^\s'\",;()\[\]{}]+")

log = logging.getLogger("gd.bundle")


class BundleError(ValueError):
    """A model bundle is missing, malformed, or does not match its own description."""


@dataclass(frozen=True)
class FileRef:
    path: str
    sha256: str


@dataclass(frozen=True)
class ModelBundle:
    root: Path
    name: str
    version: str
    classes: tuple[str, ...]  # index 0 = background
    clip: ClipSpec
    feature_dim: int
    activity_threshold: float
    causal: bool  # the sequence encoder sees only past clips (strict streaming)
    files: dict[str, FileRef]
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)  # file key -> one of PRECISIONS
    score_delay: int = 0  # clips of future context a live clip's scores wait for

    def __post_init__(self) -> None:
        # Every file gets an explicit precision, so a written bundle equals the one read back.
        filled = {key: self.precision.get(key, "fp32") for key in self.files}
        object.__setattr__(self, "precision", filled)

    @property
    def live_latency_s(self) -> float:
        """Seconds from the start of a clip's span until its live scores are due: the clip's
        span, then `score_delay` more clips (model time excluded). The resampler's step is
        inside the span: a clip's last kept frame comes one tick before the span ends."""
        spec = self.clip
        return (spec.clip_len + self.score_delay * spec.clip_step) / spec.kept_fps

    @property
    def num_classes(self) -> int:
        """L, the action classes (background excluded)."""
        return len(self.classes) - 1

    def path(self, key: str) -> Path:
        if key not in self.files:
            raise BundleError(f"{self.root}: bundle has no file {key!r}")
        return self.root / self.files[key].path

    def to_dict(self) -> dict[str, Any]:
        """model.json's content."""
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "classes": list(self.classes),
            "clip": self.clip.to_dict(),
            "feature_dim": self.feature_dim,
            "postprocess": {
                "activity_threshold": self.activity_threshold,
                "score_delay": self.score_delay,
            },
            "sequence": {"causal": self.causal},
            "files": {k: {"path": f.path, "sha256": f.sha256} for k, f in self.files.items()},
            "precision": dict(self.precision),
            "training": self.training,
            "metrics": self.metrics,
        }

    def card(self) -> dict[str, Any]:
        """The model card the API shows: everything but file paths."""
        card = self.to_dict()
        card["files"] = {k: {"sha256": f.sha256} for k, f in self.files.items()}
        return card


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle_json(bundle: ModelBundle) -> None:
    """Write `model.json` atomically (the encoders must already be in place), with every
    absolute path made `portable` (logged as a warning: the writer should have done it)."""
    meta = bundle.to_dict()
    found = absolute_paths(meta)
    if found:
        log.warning(
            "%s: made machine paths portable in %s",
            bundle.root / MODEL_JSON,
            ", ".join(found),
        )
        meta = portable(meta)
    atomic_write_text(bundle.root / MODEL_JSON, json.dumps(meta, indent=2) + "\n")


def portable(value: Any, base: str | Path | None = None) -> Any:
    """`value` (JSON-like) with every absolute path in its strings rewritten relative to
    `base` (default: the working directory) when inside it, else as `.../<name>`: a record
    that says where things were without naming the machine's folders."""
    if isinstance(value, dict):
        return {k: portable(v, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v, base) for v in value]
    if isinstance(value, str):
        root = Path(base if base is not None else os.getcwd()).resolve()
        return ABSOLUTE_PATH.sub(lambda m: _relative(m.group(), root), value)
    return value


def _relative(path: str, root: Path) -> str:
    p = Path(os.path.normpath(path))
    if p == root:
        return "."
    if p.is_relative_to(root):
        return str(p.relative_to(root))
    return f".../{p.name}" if p.name else "..."


def absolute_paths(value: Any, where: str = "") -> list[str]:
    """Dotted keys (`training.dataset.root`, `training.command[0]`) of the strings in `value`
    that hold an absolute path."""
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in absolute_paths(v, f"{where}.{k}".lstrip("."))]
    if isinstance(value, list | tuple):
        return [f for i, v in enumerate(value) for f in absolute_paths(v, f"{where}[{i}]")]
    return [where] if isinstance(value, str) and ABSOLUTE_PATH.search(value) else []


def load_bundle(root: str | Path, verify_hashes: bool = True) -> ModelBundle:
    """Read and check `root/model.json` and the files it lists."""
    root = Path(root)
    meta_path = root / MODEL_JSON
    if not meta_path.is_file():
        raise BundleError(f"{root}: not a model bundle (no {MODEL_JSON})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{meta_path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: must hold a JSON object")
    where = str(meta_path)
    version = _get(meta, "format_version", int, where)
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{where}: format_version {version} is not supported (this server reads "
            f"{FORMAT_VERSION}); export the model again"
        )
    classes = _get(meta, "classes", list, where)
    if len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        raise BundleError(f"{where}: classes must be >= 2 non-empty names, 0 = background")
    if len(set(classes)) != len(classes):
        raise BundleError(f"{where}: classes has duplicate names")
    try:
        clip = ClipSpec.from_dict(_get(meta, "clip", dict, where))
    except ClipSpecError as e:
        raise BundleError(f"{where}: clip: {e}") from e
    feature_dim = _get(meta, "feature_dim", int, where)
    if feature_dim < 1:
        raise BundleError(f"{where}: feature_dim must be positive, got {feature_dim}")
    post = _get(meta, "postprocess", dict, where)
    threshold = _get(post, "activity_threshold", float, f"{where}: postprocess")
    if not 0.0 <= threshold <= 1.0:
        raise BundleError(f"{where}: postprocess.activity_threshold must be in [0, 1]")
    delay = _get(post, "score_delay", int, f"{where}: postprocess") if "score_delay" in post else 0
    if not 0 <= delay < clip.window:
        raise BundleError(
            f"{where}: postprocess.score_delay must be in [0, {clip.window - 1}] clips "
            f"(the window is {clip.window}), got {delay}"
        )
    causal = _get(meta.get("sequence", {"causal": False}), "causal", bool, f"{where}: sequence")
    files = {}
    for key, ref in _get(meta, "files", dict, where).items():
        if not isinstance(ref, dict):
            raise BundleError(f"{where}: files.{key} must be an object with path and sha256")
        path = _get(ref, "path", str, f"{where}: files.{key}")
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise BundleError(f"{where}: files.{key}.path must stay inside the bundle: {path}")
        files[key] = FileRef(path, _get(ref, "sha256", str, f"{where}: files.{key}"))
    missing = [k for k in REQUIRED_FILES if k not in files]
    if missing:
        raise BundleError(f"{where}: files lacks {', '.join(missing)}")
    precision = _get(meta, "precision", dict, where) if "precision" in meta else {}
    for key, value in precision.items():
        if key not in files:
            raise BundleError(f"{where}: precision names {key!r}, which is not in files")
        if value not in PRECISIONS:
            raise BundleError(
                f"{where}: precision.{key} must be one of {', '.join(PRECISIONS)}, got {value!r}"
            )
    bundle = ModelBundle(
        root=root,
        name=_get(meta, "name", str, where),
        version=_get(meta, "version", str, where),
        classes=tuple(classes),
        clip=clip,
        feature_dim=feature_dim,
        activity_threshold=float(threshold),
        causal=causal,
        files=files,
        training=meta.get("training", {}),
        metrics=meta.get("metrics", {}),
        precision=dict(precision),
        score_delay=delay,
    )
    for key, ref in files.items():
        path = root / ref.path
        if not path.is_file():
            raise BundleError(f"{root}: {key} file {ref.path} is missing")
        if verify_hashes and sha256_file(path) != ref.sha256:
            raise BundleError(
                f"{root}: {key} file {ref.path} does not match its sha256 in {MODEL_JSON} "
                "(corrupt or replaced; export the bundle again)"
            )
    return bundle


def _get(obj: dict, key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise BundleError(f"{where}: missing {key!r}")
    value = obj[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise BundleError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def expected_shapes(bundle: ModelBundle, key: str) -> tuple[list[Dim], list[Dim]]:
    """(input, output) shapes an encoder must have; None = any size (the batch, and the
    sequence encoder's time axis, which is shorter than T_w for videos under one window)."""
    spec, d = bundle.clip, bundle.feature_dim
    if key == "visual_encoder":
        return [None, spec.clip_len, spec.height, spec.width], [None, d]
    if key == "sequence_encoder":
        return [None, None, d], [None, None, bundle.num_classes + 1]
    raise BundleError(f"no shape rule for {key!r}")


def check_encoder_shapes(
    bundle: ModelBundle, key: str, input_shape: Sequence[Dim], output_shape: Sequence[Dim]
) -> None:
    """Raise `BundleError` naming the encoder, the tensor and the axis that do not match.

    A static size in the file where the rule wants a dynamic axis is accepted only where the
    rule allows it (never for the batch axis: the server batches clips across streams).
    """
    want_in, want_out = expected_shapes(bundle, key)
    for tensor, got, want in (("input", input_shape, want_in), ("output", output_shape, want_out)):
        if len(got) != len(want):
            raise BundleError(
                f"{bundle.root}: {key} {tensor} has {len(got)} axes {list(got)}, "
                f"want {len(want)} {want}"
            )
        for axis, (g, w) in enumerate(zip(got, want, strict=True)):
            if axis == 0 and isinstance(g, int):
                raise BundleError(
                    f"{bundle.root}: {key} {tensor} has a fixed batch size {g}; "
                    "export it with a dynamic batch axis"
                )
            if w is not None and isinstance(g, int) and g != w:
                raise BundleError(
                    f"{bundle.root}: {key} {tensor} axis {axis} is {g}, the bundle says {w} "
                    f"(shape {list(got)}, want {want})"
                )


def engine_folder_name(gpu_name: str, trt_version: str) -> str:
    """The `engines/` subfolder of plans built for one GPU model and TensorRT version, e.g.
    ("NVIDIA H200", "10.13.3") -> "nvidia-h200-trt10.13.3". A TensorRT plan runs only on the
    GPU model and TensorRT version that built it, so both are in the name."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    version = re.sub(r"[^A-Za-z0-9.]+", "-", trt_version).strip("-")
    if not slug or not version:
        raise BundleError(
            f"cannot name an engine folder for GPU {gpu_name!r}, TensorRT {trt_version!r}"
        )
    return f"{slug}-trt{version}"
