"""The tiny batch 01→07 through papermill (as CI and `make run` drive it), then the file contracts
of every stage (CONTRACTS.md)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from recnb import paths

RUN = "tiny"


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    cmd = [sys.executable, "-m", "recnb.run", str(paths.REPO_ROOT / "params" / "tiny.yaml"), "--outputs-dir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / RUN


def metrics(run_root, stage):
    return json.loads((run_root / stage / "metrics.json").read_text())


def test_every_stage_finished_with_params_and_metrics(run_root):
    for stage in paths.STAGES:
        assert (run_root / stage / "metrics.json").exists(), stage
        params = json.loads((run_root / stage / "params.json").read_text())
        assert params["run"] == RUN and params["dataset"] == "tiny"
        assert (run_root / "notebooks" / f"{stage}.ipynb").exists()


def test_stage01_contract(run_root):
    d = run_root / "01_data_duckdb"
    items = pd.read_parquet(d / "items.parquet")
    splits = pd.read_parquet(d / "splits.parquet")
    inter = pd.read_parquet(d / "interactions.parquet")
    assert list(items.columns) == ["item_id", "title", "categories", "popularity"]
    assert items["title"].is_unique and items["item_id"].tolist() == list(range(1, len(items) + 1))
    assert set(splits.columns) == {"user_id", "train_items", "valid_item", "test_item"}
    assert len(inter) == sum(len(t) + 2 for t in splits["train_items"])
    stats = metrics(run_root, "01_data_duckdb")
    assert stats["users"] == len(splits) and stats["items"] == len(items) and stats["interactions"] == len(inter)
