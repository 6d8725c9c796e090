"""Where every stage reads and writes: `<outputs_dir>/<run>/<stage_dir>/`.

A stage directory is the stage name (`02_sasrec`) or `<stage>-<variant>` for a variant of it
(`04_sft_unsloth-v1`). Relative `outputs_dir` values are taken from the repository root, so a
notebook gives the same paths whether papermill, nbval or JupyterLab runs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from recnb import artifacts as col

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("RECNB_CACHE", REPO_ROOT / "data" / "cache"))
KERNEL_NAME = "recnb"  # the Jupyter kernel `make install` registers; every notebook names it (papermill, nbval, Lab)

STAGES = (
    "01_data_duckdb",
    "02_sasrec",
    "03_instructions",
    "04_sft_unsloth",
    "05_ppo",
    "06_eval",
    "07_case_study",
)


def run_dir(outputs_dir: str | os.PathLike, run: str) -> Path:
    """Directory of one run; relative `outputs_dir` is resolved against the repository root."""
    root = Path(outputs_dir)
    if not root.is_absolute():
        root = REPO_ROOT / root
    if not run or "/" in run or run.startswith("."):
        raise ValueError(f"run name {run!r} is not a plain directory name; set param 'run' to e.g. 'ml-100k'")
    return root / run


def figures_dir(outputs_dir: str | os.PathLike, run: str, create: bool = True) -> Path:
    """`paper_figures/<run>/` next to the outputs root.

    With the default `outputs_dir` ("outputs") that is `<repo>/paper_figures/<run>/`; a run into
    another root (tests, `--outputs-dir`) keeps its figures beside it instead of in the repository.
    """
    path = run_dir(outputs_dir, run).parent.parent / "paper_figures" / run
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def stage_dir_name(stage: str, variant: str = "") -> str:
    """`04_sft_unsloth` + `v1` -> `04_sft_unsloth-v1`; an empty variant is the main path."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return f"{stage}-{variant}" if variant else stage


def stage_dir(outputs_dir: str | os.PathLike, run: str, stage: str, variant: str = "", create: bool = True) -> Path:
    """Output directory of a stage (created unless `create=False`)."""
    path = run_dir(outputs_dir, run) / stage_dir_name(stage, variant)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


_INPUTS_READ: dict[str, Path] = {}  # stage dirs handed out by input_dir in this process, for inputs.json


def input_dir(outputs_dir: str | os.PathLike, run: str, name: str) -> Path:
    """A finished upstream stage directory (`name` is a stage dir name such as `04_sft_unsloth-v1`).

    Every directory handed out is noted (`inputs_read`): `recnb.record.record_results` stores the
    digest of each, so the runner knows when a stage's inputs changed after it ran.

    Raises:
        FileNotFoundError: if the directory has no `metrics.json`, i.e. the stage never finished.
    """
    path = run_dir(outputs_dir, run) / name
    if not (path / col.METRICS_FILE).exists():
        raise FileNotFoundError(
            f"{path} is missing or incomplete (no {col.METRICS_FILE}); run stage {name} of run {run!r} first "
            f"(python -m recnb.run params/<name>.yaml --only {name.split('-')[0]})"
        )
    _INPUTS_READ[name] = path
    return path


def inputs_read() -> dict[str, Path]:
    """The upstream stage directories `input_dir` handed out in this process, by name."""
    return dict(_INPUTS_READ)


def notebook_path(stage: str) -> Path:
    """The committed notebook of a stage."""
    stage_dir_name(stage)
    return REPO_ROOT / "notebooks" / f"{stage}.ipynb"
