"""Does a model know which titles are in a category? The stage-04 category probe over any models.

    .venv/bin/python studies/category_probe.py --run ml-100k \\
        --models base 04_sft_unsloth-long 05_ppo-ctl

Stage 04 records `category_auc` for its untuned and tuned model; this compares any models of a run
(e.g. every PPO variant) on the same users. The probe and its figures are `recnb.sft.probe`'s:
auc_ctl (= category_auc), auc_noctl, shift, each with its standard error over users.
Ends with one line of `key=value` figures.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from recnb import artifacts as col
from recnb import data, llm, paths, record, tasks
from recnb.catalog import Catalog
from recnb.evaluation import predict as evaluate
from recnb.sft.probe import category_probe, probe_cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="ml-100k", help="a run under outputs/ with stages 01-03 finished")
    ap.add_argument("--models", nargs="+", default=["base", "04_sft_unsloth"],
                    help="'base' (the zero-shot base LLM) or stage 04/05 dirs of the run")
    ap.add_argument("--base-model", default=llm.SMOLLM2, help="the LLM behind 'base'")
    ap.add_argument("--users", type=int, default=32, help="valid users probed")
    ap.add_argument("--per-side", type=int, default=10, help="candidates in C and outside C per user")
    ap.add_argument("--max-prompt-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: every core this process may use")
    args = ap.parse_args()
    if any(m == "sasrec" for m in args.models):
        raise SystemExit("--models: 'sasrec' is not a language model; name 'base' or stage 04/05 dirs")
    try:
        data_dir = paths.input_dir("outputs", args.run, "01_data_duckdb")
        teacher_dir = paths.input_dir("outputs", args.run, "02_sasrec")
        instr_dir = paths.input_dir("outputs", args.run, "03_instructions")
        specs, _ = evaluate.resolve_models({m: m for m in args.models}, paths.run_dir("outputs", args.run))
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    record.seed_everything(0, args.threads)
    catalog = Catalog(data.load_prepared(data_dir).items)
    cases = probe_cases(tasks.read_records(instr_dir / col.SFT_VALID_FILE),
                        pd.read_parquet(teacher_dir / col.TEACHER_FILE), catalog, args.users, args.per_side)
    if not cases:
        raise SystemExit(f"{instr_dir / col.SFT_VALID_FILE}: no I1+C prompt with enough teacher candidates")
    rows = {}
    for spec in specs:
        t0 = time.time()
        model, tokenizer = evaluate.load_model(spec, args.base_model)
        rows[spec.label] = category_probe(model, tokenizer, cases, catalog, args.max_prompt_tokens, progress=True)
        rows[spec.label]["seconds"] = round(time.time() - t0, 1)
        del model
    table = pd.DataFrame(rows).T
    print(table.round(3).to_string())
    print(record.summary_line("category_probe", run=args.run, **{
        f"{m}_{k}": v for m, r in rows.items() for k, v in r.items() if k in ("category_auc", "auc_noctl", "shift")}))


if __name__ == "__main__":
    main()
