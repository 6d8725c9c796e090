"""What more SFT buys: valid HR@10, TCP and formatting errors against optimizer steps.

Stage 04 trains SmolLM2 for the steps that fit `make run`'s budget (70 on ml-100k, 0.13 epoch)
and its HR@10 on the valid prompts stays 0. This script asks whether that is the budget or the
method: it retrains stage 04's model with the stage's own resolved params (`params.json`: data,
LoRA, lr, batches, seed) but `--steps` optimizer steps, and at each of `--eval-at` scores greedy
answers to the same valid prompts stage 04 scores (the stage-06 metric functions). The linear
learning-rate decay spans `--steps`, so step 70 here is not the 70-step model of stage 04.

    nice .venv/bin/python benchmarks/sft_budget.py --steps 280 --eval-at 70,140,210,280

Writes (by default into `<run-dir>/04_sft_unsloth-long`, which `params/ml-100k-ppo-long.yaml` reads)
`<out>/curve.csv` (one row per evaluation), `<out>/train_log.csv` and, like a stage-04 dir,
`<out>/adapter/` with `<out>/params.json` (the stage's params, `max_steps` replaced) and `metrics.json`
(training figures and the curve), so stage 05 (`sft_dir`, via a run folder that links it) or
`llm.load_for_inference` can start from the longer-trained model. Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback

from recnb import columns as col
from recnb import data, paths, record, sft


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
    ap.add_argument("--run-dir", default="outputs/ml-100k", help="a run with stages 01, 03 and 04 done")
    ap.add_argument("--stage", default="04_sft_unsloth", help="the SFT stage whose params.json to reuse")
    ap.add_argument("--steps", type=int, default=280, help="optimizer steps to train")
    ap.add_argument("--eval-at", default="70,140,280", help="comma-separated optimizer steps to evaluate at")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = every core)")
    ap.add_argument("--out", default="", help="output dir (default: <run-dir>/04_sft_unsloth-long)")
    ap.add_argument("--force", action="store_true", help="overwrite an --out dir that already holds a result")
    args = ap.parse_args()
    run = Path(args.run_dir).resolve()  # relative to the working directory, as before
    try:
        params_file = paths.input_dir(run.parent, run.name, args.stage) / col.PARAMS_FILE
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    try:
        eval_at = {int(s) for s in args.eval_at.split(",") if s.strip()}
    except ValueError:
        raise SystemExit(f"--eval-at {args.eval_at!r}: give comma-separated step numbers, e.g. 70,140,280") from None
    if not eval_at or max(eval_at) > args.steps or min(eval_at) < 1:
        raise SystemExit(f"--eval-at {args.eval_at!r}: steps must lie in 1..--steps ({args.steps})")
    p = record.read_json(params_file)
    n_threads = record.seed_everything(int(p["seed"]), args.threads)
    out = Path(args.out) if args.out else run / "04_sft_unsloth-long"
    if (out / col.METRICS_FILE).exists() and not args.force:
        raise SystemExit(f"{out} already holds a finished run (metrics.json); pass --force to overwrite it or pick --out")
    out.mkdir(parents=True, exist_ok=True)

    items = data.load_prepared(run / "01_data_duckdb", p["dataset"]).items
    instr = run / "03_instructions"
    train = sft.load_train_records(instr, p["tasks"], p["label_source"], int(p["max_train_samples"]), int(p["seed"]))
    valid = sft.valid_slice(sft.read_jsonl(instr / sft.VALID_FILE), int(p["n_valid_per_task"]))
    # The stage's own settings (every SFTSettings field its params.json records), with our step count.
    settings = sft.SFTSettings(**{f.name: p[f.name] for f in fields(sft.SFTSettings) if f.name in p}
                               | {"max_steps": args.steps, "use_unsloth": False})
    print(f"{params_file}: {len(train)} training records, {len(valid)} valid prompts, {args.steps} steps "
          f"(stage 04 ran {p['max_steps']}), {n_threads} thread(s)", flush=True)

    model, tokenizer, wrapped = sft.load_trainable(p["base_model"], settings)
    kw = {"fuzzy": bool(p["fuzzy"]), "batch_size": int(p["valid_batch_size"]), "max_new_tokens": int(p["max_new_tokens"]),
          "max_prompt_tokens": int(p["max_prompt_tokens"]), "progress": False}

    def evaluate(m) -> dict:
        t0 = time.perf_counter()
        scores = sft.evaluate_valid(m, tokenizer, valid, items, **kw)
        summary = sft.summarise_scores(scores)["all"]
        firsts = {a.splitlines()[0].strip() for a in scores["raw"] if a.strip()}
        hits = int(scores["hit"].fillna(0).astype(bool).sum())
        row = {"hits": hits, **{k: summary[k] for k in ("hr", "ndcg", "tcp_pct", "tcp_plus_c_pct", "tcp_minus_c_pct", "cpa_pct", "correct_count_pct",
                                                         "repeat_item_pct", "non_exist_pct", "in_history_pct")},
               "distinct_first_lines": len(firsts), "eval_seconds": round(time.perf_counter() - t0, 1)}
        print(f"  eval: {row}", flush=True)
        return row

    trainer = sft.build_trainer(model, tokenizer, train, settings, out / "trainer", wrapped)
    curve = EvalAtSteps(eval_at, evaluate)
    trainer.add_callback(curve)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    sft.train_log(trainer).to_csv(out / "train_log.csv", index=False)
    sft.save_adapter(trainer.model, tokenizer, out, settings)
    table = pd.DataFrame(curve.rows)
    table.to_csv(out / "curve.csv", index=False)
    print(table.round(3).to_string(index=False))
    eval_s = float(table["eval_seconds"].sum())
    record.record_results(out, {**p, "max_steps": args.steps}, {
        "train": {"records": len(train), "steps": args.steps, "seconds": round(seconds - eval_s, 1)},
        "valid_curve": table.to_dict("records")})
    figures = " ".join(f"step{int(r.step)}_hr={r.hr:.3f} step{int(r.step)}_tcp_plus_c={r.tcp_plus_c_pct:.1f} "
                       f"step{int(r.step)}_repeat={r.repeat_item_pct:.1f}" for r in table.itertuples())
    print(f"sft_budget run={run.name} steps={args.steps} train_s={seconds - eval_s:.0f} "
          f"s_per_step={(seconds - eval_s) / args.steps:.1f} {figures}")


if __name__ == "__main__":
    main()
