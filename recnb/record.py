"""Recording what a stage did: `params.json`, `inputs.json`, `manifest.json` and `metrics.json` (last).

`metrics.json` marks a stage directory as complete, so it is written atomically and only by
`record_results`, the last call of every notebook. Before it, `manifest.json` records the SHA-256
of every file the stage wrote, and `inputs.json` the digest of each upstream stage directory it
read (`recnb.paths.input_dir` notes them), so the runner can tell a stage whose outputs or inputs
changed since it ran from one that is up to date (`stage_changes`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recnb import artifacts as col

_LITERALS = (str, int, float, bool, type(None), list, tuple, dict)


def snapshot_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's parameters: every public plain-literal global defined so far.

    Called in the setup cell, right after the `parameters` cell (and papermill's injected one),
    when the only literal globals are the parameters themselves.
    """
    skip = {"In", "Out", "exit", "quit", "get_ipython"}
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and k not in skip and isinstance(v, _LITERALS)
    }


def seed_everything(seed: int, threads: int = 0) -> int:
    """Seed python, numpy and torch; set torch's thread count (0 = cores this process may use).

    Returns:
        The number of threads torch will use.
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    n = threads if threads and threads > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename), turning NaN into null and numpy scalars into numbers."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_plain(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file with a one-line error naming it when it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and rerun its stage") from None


def record_results(out_dir: str | os.PathLike, params: Mapping[str, Any], metrics: Mapping[str, Any],
                   inputs: Mapping[str, Path] | None = None) -> Path:
    """Write `params.json`, `inputs.json`, `manifest.json`, then `metrics.json` (which marks the stage complete).

    Args:
        inputs: upstream stage directories read, by name (default: those `recnb.paths.input_dir`
            handed out in this process).
    """
    from recnb import paths

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / col.PARAMS_FILE, dict(params))
    read = paths.inputs_read() if inputs is None else inputs
    inputs = {name: stage_digest(path) for name, path in read.items() if Path(path) != out_dir}
    write_json(out_dir / INPUTS_FILE, inputs)
    write_json(out_dir / MANIFEST_FILE, file_hashes(out_dir))
    return write_json(out_dir / col.METRICS_FILE, dict(metrics))


INPUTS_FILE, MANIFEST_FILE = col.INPUTS_FILE, col.MANIFEST_FILE
_UNHASHED = {col.METRICS_FILE, MANIFEST_FILE}  # written after (or as) the manifest


def file_hashes(stage_dir: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file under a stage directory (paths relative to it), but metrics and manifest."""
    root = Path(stage_dir)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in _UNHASHED and not rel.endswith(".tmp"):
            with path.open("rb") as fh:
                out[rel] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def stage_digest(stage_dir: str | os.PathLike) -> str:
    """One hash of a finished stage's content: that of its `manifest.json` ("" when it has none)."""
    manifest = Path(stage_dir) / MANIFEST_FILE
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else ""


def stage_changes(stage_dir: str | os.PathLike) -> list[str]:
    """What changed in a finished stage since it ran, as short phrases (empty: nothing).

    Its own files against `manifest.json` (missing, modified or new), then each upstream stage it
    read against the digest `inputs.json` recorded (the upstream reran, or its files changed).
    """
    root = Path(stage_dir)
    if not (root / MANIFEST_FILE).exists():
        return [f"no {MANIFEST_FILE} (written by an older recnb)"]
    try:
        recorded, inputs = read_json(root / MANIFEST_FILE), read_json(root / INPUTS_FILE)
    except (OSError, ValueError) as err:
        return [str(err)]
    now = file_hashes(root)
    changes = [f"{name} {'missing' if name not in now else 'modified'}"
               for name in sorted(recorded) if now.get(name) != recorded[name]]
    changes += [f"{name} new" for name in sorted(set(now) - set(recorded))]
    for name, digest in inputs.items():
        upstream = root.parent / name
        if stage_digest(upstream) != digest or stage_changes_own(upstream):
            changes.append(f"input {name} changed")
    return changes


def stage_changes_own(stage_dir: str | os.PathLike) -> bool:
    """Whether a finished stage's own files differ from its manifest (or it has none)."""
    root = Path(stage_dir)
    if not (root / MANIFEST_FILE).exists() or not (root / col.METRICS_FILE).exists():
        return True
    return file_hashes(root) != read_json(root / MANIFEST_FILE)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def summary_line(name: str, **values: Any) -> str:
    """The last line every benchmark and study prints: `name=<script> key=value ...` (floats to 4
    significant digits), so runs can be compared line by line."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace(" ", "_")

    return " ".join([f"name={name}"] + [f"{k}={fmt(v)}" for k, v in values.items()])
