"""Benchmark: stage 04's valid check and category probe, as trained weights (fp32) against `valid_dtype:
bfloat16` with a larger batch and `valid_stop_past_k`, on the same prompts and model, in one run.

    nice .venv/bin/python benchmarks/sft_validation.py --run ml-100k --outputs-dir outputs --threads 2

Reads a run whose stages 01-03 have finished (its valid prompts, teacher and catalog) and runs the
untuned base model, as stage 04 does before training (`--base-model`, default the run's
`params/<dataset>.yaml` choice smollm2-135m): `--n-per-task` valid prompts per task and the probe on
`--probe-users` users. `old` is stage 04 before the options (fp32, batch `--old-batch`, every row to EOS
or the budget); `new` is bf16 weights, batch `--new-batch`, rows stopped past k. Agreement: identical
parsed answers (%) and the largest change of a headline figure; the probe's AUC both ways. Ends with
one `key=value` line.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from recnb import artifacts as col
from recnb import data, llm, paths, record, sft
from recnb.answer import parse_titles
from recnb.catalog import Catalog
from recnb.tasks import read_records

FIGURES = ("correct_count_pct", "repeat_item_pct", "non_exist_pct", "in_history_pct", "tcp_pct", "hr")


def timed(label: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    print(f"  {label:<10} {seconds:8.1f} s", flush=True)
    return out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="ml-100k", help="a run under --outputs-dir whose stages 01-03 finished")
    ap.add_argument("--outputs-dir", default="outputs")
    ap.add_argument("--dataset", default=None, help="default: the run name")
    ap.add_argument("--base-model", default=llm.SMOLLM2)
    ap.add_argument("--n-per-task", type=int, default=16, help="valid prompts per task (params/ml-100k.yaml: 16)")
    ap.add_argument("--probe-users", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--old-batch", type=int, default=16, help="stage 04's valid_batch_size before (the default)")
    ap.add_argument("--new-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = paths.run_dir(args.outputs_dir, args.run)
    items = data.load_prepared(run_dir / "01_data_duckdb", args.dataset or args.run).items
    catalog = Catalog(items)
    all_valid = read_records(run_dir / "03_instructions" / col.SFT_VALID_FILE)
    teacher = pd.read_parquet(run_dir / "02_sasrec" / col.TEACHER_FILE)
    common = {"base_model": args.base_model, "n_valid_per_task": args.n_per_task, "max_new_tokens": args.max_new_tokens,
              "fuzzy": True, "probe_users": args.probe_users}
    paths_cfg = {"old": sft.SFTConfig(**common, valid_batch_size=args.old_batch),
                 "new": sft.SFTConfig(**common, valid_batch_size=args.new_batch, valid_dtype="bfloat16",
                                      valid_stop_past_k=True)}
    records = sft.valid_slice(all_valid, args.n_per_task)
    cases = sft.probe_cases(all_valid, teacher, catalog, args.probe_users, 10)
    print(f"{args.run}: {len(records)} valid prompts, probe on {len(cases)} users, {args.base_model}, "
          f"{args.threads} thread(s)")
    rows, answers = {}, {}
    model, tok = llm.load_base(args.base_model)
    for name, cfg in paths_cfg.items():  # old (auto: fp32 as loaded) first, then cast in place for new
        model = sft.for_validation(model, cfg)
        scores, t_valid = timed(f"{name} valid", sft.evaluate_valid, model, tok, records, items, cfg, progress=False)
        probe, t_probe = timed(f"{name} probe", sft.category_probe, model, tok, cases, catalog, cfg.max_prompt_tokens)
        summary = sft.summarise_scores(scores)["all"]
        # a stopped row lists k + 1 items at most: compare the first k titles and the count up to k + 1
        answers[name] = [(tuple(t[:r["k"]]), min(len(t), r["k"] + 1))
                         for t, r in zip(map(parse_titles, scores["raw"]), records)]
        rows[name] = {"valid_s": t_valid, "probe_s": t_probe, "lists/s": len(records) / t_valid,
                      "category_auc": probe["category_auc"], **{f: summary[f] for f in FIGURES}}
    table = pd.DataFrame(rows).T
    print(table.round(3).T.to_string())
    same = sum(a == b for a, b in zip(answers["old"], answers["new"])) / len(records)
    delta = (table.loc["new", list(FIGURES)] - table.loc["old", list(FIGURES)]).abs()
    old_total = table.loc["old", "valid_s"] + table.loc["old", "probe_s"]
    new_total = table.loc["new", "valid_s"] + table.loc["new", "probe_s"]
    print(record.summary_line(
        "sft_validation", run=args.run, model=args.base_model, prompts=len(records), probe_users=len(cases),
        threads=args.threads, old_s=old_total, new_s=new_total, speedup=old_total / new_total,
        valid_speedup=table.loc["old", "valid_s"] / table.loc["new", "valid_s"],
        probe_speedup=table.loc["old", "probe_s"] / table.loc["new", "probe_s"], same_answers_pct=100 * same,
        max_figure_change=float(delta.max()), max_figure_change_at=str(delta.idxmax()),
        auc_old=table.loc["old", "category_auc"], auc_new=table.loc["new", "category_auc"]))


if __name__ == "__main__":
    main()
