"""RL runs of one run side by side, from their stage-05 records alone (no stage 06 needed).

Stage 07 draws the same table and figure when stage 06 evaluated several stage-05 models (`make
paper`). This script compares stage-05 dirs as soon as they have trained, e.g. PPO against GRPO on
ml-100k after `python -m recnb.run params/ml-100k.yaml --paper --only 05_ppo:grpo`:

    .venv/bin/python studies/rl_runs.py --run ml-100k --stages full=05_ppo full-grpo=05_ppo-grpo

Prints `recnb.report.rl.head_to_head`'s table (s/update, sampled list reward and illegal items of the
first and last quarter of the updates, greedy validation at the start and at the kept checkpoint,
and with stage 05's `reward_check` the paired gain of the last actor over its start on the valid prompts),
writes it and the figure (reward and illegal items against sampled answers and against training
seconds) under `outputs/studies/rl_runs/<run>/`; ends with one key=value line (each run's s/update
the first-to-last-quarter change of its sampled reward (`_quarter_gain`: other prompts each update), the
paired gain where the run checked it (`_paired_gain`), and the ratio of the first run's s/update to each other's).
"""

from __future__ import annotations

import argparse

import pandas as pd

from recnb import paths, record
from recnb.report import plots, rl


def parse_stages(specs: list[str]) -> dict[str, str]:
    """`label=stage_dir` (or a bare stage dir, its own label) -> {label: stage dir}."""
    stages = {}
    for spec in specs:
        label, _, stage = spec.rpartition("=")
        stages[label or stage] = stage
    if len(stages) < 2:
        raise SystemExit(f"--stages: name at least two stage-05 dirs (got {specs}); e.g. full=05_ppo full-grpo=05_ppo-grpo")
    return stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="ml-100k", help="a run under outputs/ whose stage-05 dirs have finished")
    ap.add_argument("--stages", nargs="+", default=["full=05_ppo", "full-grpo=05_ppo-grpo"],
                    help="label=stage_dir of each RL run (the first is the reference of the ratios)")
    args = ap.parse_args()
    stages = parse_stages(args.stages)
    try:
        table, frame = rl.load({label: paths.input_dir("outputs", args.run, stage) for label, stage in stages.items()})
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    out = paths.REPO_ROOT / "outputs" / "studies" / "rl_runs" / args.run
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "head_to_head.csv", index=False)
    plots.set_style()
    saved = plots.save(plots.rl_head_to_head(frame), out, "rl_head_to_head")
    print(table.set_index("run").T.to_string())
    print(f"wrote {out / 'head_to_head.csv'}, {', '.join(str(p) for p in saved)}")
    ref = table.iloc[0]
    values = {}
    for _, row in table.iterrows():
        key = str(row["run"]).replace("-", "_")
        values[f"{key}_s_per_update"] = float(row["s_per_update"])
        values[f"{key}_quarter_gain"] = float(row["list_reward_last"] - row["list_reward_first"])
        values[f"{key}_illegal_change"] = float(row["illegal_pct_last"] - row["illegal_pct_first"])
        if pd.notna(row["reward_gain"]):  # the paired gain on the valid prompts (stage 05's reward_check)
            values[f"{key}_paired_gain"] = float(row["reward_gain"])
        if row["run"] != ref["run"]:
            values[f"{key}_time_ratio"] = float(row["s_per_update"] / ref["s_per_update"])
    print(record.summary_line("rl_runs", run=args.run, **values))


if __name__ == "__main__":
    main()
