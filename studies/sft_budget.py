"""What more SFT buys: valid HR@10, TCP and formatting errors against optimizer steps.

Stage 04 trains SmolLM2 for the steps that fit `make run`'s budget (70 on ml-100k, 0.13 epoch)
and its HR@10 on the valid prompts stays 0. This script asks whether that is the budget or the
method: it retrains stage 04's model with the stage's own resolved params (`params.json`: data,
LoRA, lr, batches, seed) but `--steps` optimizer steps, and at each of `--eval-at` scores greedy
answers to the same valid prompts stage 04 scores (the stage-06 metric functions). The linear
learning-rate decay spans `--steps`, so step 70 here is not the 70-step model of stage 04.

    nice .venv/bin/python studies/sft_budget.py --run ml-100k --steps 280 --eval-at 70,140,210,280

Writes `outputs/studies/sft_budget/<run>/curve.csv` (one row per evaluation) and `train_log.csv`,
and ends with one key=value line. (The longer-trained model itself, for PPO to start from, is the
stage-04 variant `04_sft_unsloth:long` of `params/ml-100k-ppo-long.yaml`, which the runner builds.)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback

from recnb import artifacts as col
from recnb import data, paths, record, sft, tasks


class EvalAtSteps(TrainerCallback):
    """Greedy answers to the valid prompts at chosen optimizer steps, scored and kept as rows."""

    def __init__(self, steps: set[int], evaluate) -> None:
        self.steps, self.evaluate, self.rows = steps, evaluate, []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            was_training = model.training
            model.eval()
            self.rows.append({"step": state.global_step, "epoch": state.epoch, **self.evaluate(model)})
            model.train(was_training)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="ml-100k", help="a run under outputs/ with stages 01, 03 and 04 finished")
    ap.add_argument("--stage", default="04_sft_unsloth", help="the SFT stage whose params.json to reuse")
    ap.add_argument("--steps", type=int, default=280, help="optimizer steps to train")
    ap.add_argument("--eval-at", default="70,140,280", help="comma-separated optimizer steps to evaluate at")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: every core this process may use")
    ap.add_argument("--out", default="", help="output dir (default: outputs/studies/sft_budget/<run>)")
    args = ap.parse_args()
    try:
        stage = paths.input_dir("outputs", args.run, args.stage)
        instr = paths.input_dir("outputs", args.run, "03_instructions")
        data_dir = paths.input_dir("outputs", args.run, "01_data_duckdb")
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    try:
        eval_at = {int(s) for s in args.eval_at.split(",") if s.strip()}
    except ValueError:
        raise SystemExit(f"--eval-at {args.eval_at!r}: give comma-separated step numbers, e.g. 70,140,280") from None
    if not eval_at or max(eval_at) > args.steps or min(eval_at) < 1:
        raise SystemExit(f"--eval-at {args.eval_at!r}: steps must lie in 1..--steps ({args.steps})")
    stage_cfg = sft.SFTConfig.from_params(record.read_json(stage / col.PARAMS_FILE))
    cfg = replace(stage_cfg, max_steps=args.steps, use_unsloth=False)  # the stage's own settings, our step count
    n_threads = record.seed_everything(cfg.seed, args.threads)
    out = Path(args.out) if args.out else paths.REPO_ROOT / "outputs" / "studies" / "sft_budget" / args.run
    out.mkdir(parents=True, exist_ok=True)

    items = data.load_prepared(data_dir, cfg.dataset).items
    train = sft.load_train_records(instr, cfg)
    valid = sft.valid_slice(tasks.read_records(instr / col.SFT_VALID_FILE), cfg.n_valid_per_task)
    print(f"{stage}: {len(train)} training records, {len(valid)} valid prompts, {args.steps} steps "
          f"(stage 04 ran {stage_cfg.max_steps}), {n_threads} thread(s)", flush=True)
    model, tokenizer, wrapped = sft.load_trainable(cfg)

    def evaluate(m) -> dict:
        t0 = time.perf_counter()
        scores = sft.evaluate_valid(m, tokenizer, valid, items, cfg, progress=False)
        summary = sft.summarise_scores(scores)["all"]
        firsts = {a.splitlines()[0].strip() for a in scores["raw"] if a.strip()}
        hits = int(scores["hit"].fillna(0).astype(bool).sum())
        row = {"hits": hits, **{k: summary[k] for k in ("hr", "ndcg", "tcp_pct", "tcp_plus_c_pct", "tcp_minus_c_pct",
                                                         "cpa_pct", "correct_count_pct", "repeat_item_pct",
                                                         "non_exist_pct", "in_history_pct")},
               "distinct_first_lines": len(firsts), "eval_seconds": round(time.perf_counter() - t0, 1)}
        print(f"  eval: {row}", flush=True)
        return row

    trainer = sft.build_trainer(model, tokenizer, train, cfg, out / "trainer", wrapped)
    curve = EvalAtSteps(eval_at, evaluate)
    trainer.add_callback(curve)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    sft.train_log(trainer).to_csv(out / col.TRAIN_LOG_FILE, index=False)
    table = pd.DataFrame(curve.rows)
    table.to_csv(out / "curve.csv", index=False)
    print(table.round(3).to_string(index=False))
    train_s = seconds - float(table["eval_seconds"].sum())
    figures = {}
    for r in table.itertuples():
        figures |= {f"step{int(r.step)}_hr": r.hr, f"step{int(r.step)}_tcp_plus_c": r.tcp_plus_c_pct,
                    f"step{int(r.step)}_repeat": r.repeat_item_pct}
    print(record.summary_line("sft_budget", run=args.run, steps=args.steps, train_s=train_s,
                              s_per_step=train_s / args.steps, **figures))

if __name__ == "__main__":
    main()
