"""Recording what a stage did: resolved `params.json` and `metrics.json` (written last).

`metrics.json` marks a stage directory as complete, so it is written atomically and only by
`record_results`, the last call of every notebook.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recnb import columns as col

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


def record_results(out_dir: str | os.PathLike, params: Mapping[str, Any], metrics: Mapping[str, Any]) -> Path:
    """Write `params.json` then `metrics.json` (which marks the stage complete)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / col.PARAMS_FILE, dict(params))
    return write_json(out_dir / col.METRICS_FILE, dict(metrics))


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
