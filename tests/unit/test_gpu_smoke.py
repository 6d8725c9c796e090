"""benchmarks/gpu_smoke.py: its figures from a run's files (CPU), and the smoke run itself (GPU)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from recnb import paths
from tests.scripts import load_script

SCRIPT = paths.REPO_ROOT / "benchmarks" / "gpu_smoke.py"


def _load():
    return load_script(SCRIPT)


def test_figures_read_the_stage_contracts(tmp_path):
    smoke = _load()
    (tmp_path / "04_sft_unsloth").mkdir()
    (tmp_path / "04_sft_unsloth" / "metrics.json").write_text(json.dumps(
        {"stage_seconds": 95.0, "train": {"trainer": "unsloth", "tokens_per_s": 41000.0, "epochs": 3.0},
         "category_auc": {"base": 0.5, "sft": 0.74}}))
    (tmp_path / "06_eval").mkdir()
    (tmp_path / "06_eval" / "metrics.json").write_text(json.dumps(
        {"stage_seconds": 200.0, "runs": {"v2": {"seconds": 50.0, "lists": 2400},
                                          "full": {"seconds": 50.0, "lists": 2400, "same_weights_as": "v2"}}}))
    rows = []
    for model, group, tcp, hr, ill in (("v2", "I0", 0.0, 0.05, 2.0), ("v2", "I1+C", 70.0, 0.0, 0.0),
                                       ("v2", "I1+C_nocontrol", 40.0, 0.0, 0.0), ("full", "I0", 0.0, 0.04, 1.0)):
        rows.append({"model": model, "test_group": group, "matcher": "fuzzy", "tcp_pct": tcp, "hr": hr,
                     "correct_count_pct": 90.0, "repeat_item_pct": ill, "non_exist_pct": ill, "in_history_pct": 0.5})
    pd.DataFrame(rows).to_csv(tmp_path / "06_eval" / "summary.csv", index=False)
    got = smoke.figures(tmp_path)
    assert got["stage04_s"] == 95.0 and got["stage06_s"] == 200.0 and "stage05_s" not in got
    assert got["sft_trainer"] == "unsloth" and got["category_auc_sft"] == 0.74
    assert got["v2_tcp_plus_delta"] == 30.0 and got["v2_hr10"] == 0.05
    assert got["full_illegal_pct"] == 2.5
    assert got["lists_per_s"] == 48.0  # full reused v2's answers: its seconds and lists are not counted twice


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_smoke_runs_the_main_path_within_ten_minutes(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--limit-s", "600", "--outputs-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=700, check=False)
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0 and last.startswith("name=gpu_smoke completed=True"), done.stdout[-3000:] + done.stderr[-3000:]
    assert "sft_trainer=unsloth" in last
