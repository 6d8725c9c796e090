"""Does an SFT model obey "no C" on the very prompts it was trained on? Fit against generalisation.

    .venv/bin/python studies/negation_fit.py --run tiny --models 04_sft_unsloth

Stage 06 measures TCP(−C) on test users; a model that misses it there may not have fitted the
training prompts either (an optimisation failure, not a generalisation one). This decodes greedy
answers for the first `--per-task` records of each control task in stage 03's SFT train file
(the prompts SFT saw, labels 0 % or 100 % in C) and in the test prompts, and reports per model,
file and task the share of listed items in C (stage 06's TCP, % of the k positions), the share
the labels hold (train only) and the repeated and history items (% of items). I3 prompts show no
history, so I3−C against I1−C separates "cannot negate" from "cannot negate against the history".
`--by-history N` also decodes the first N I1−C records of each file without the sentence (the I0
template on the same history) and gives the sentence's effect by the share of the history in C: a
model that fitted its training lists by remembering each user shows it on train and not on test.
Ends with one line of `key=value` figures.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from recnb import artifacts as col
from recnb import data, llm, paths, record, tasks
from recnb.answer import parse_titles
from recnb.catalog import Catalog
from recnb.evaluation import predict as evaluate
from recnb.instructions.build import no_control_prompt
from recnb.metrics import aggregate, score_answer

CONTROL_TASKS = ("I1+C", "I1-C", "I3+C", "I3-C")


def _twin(record: dict) -> bool:
    """A test prompt's `_nocontrol` twin (same task, no control sentence): not a control prompt."""
    return str(record.get("test_group", "")).endswith("_nocontrol")


def fit_table(model, tokenizer, files: dict[str, list[dict]], catalog: Catalog, per_task: int,
              decoding: llm.Decoding) -> pd.DataFrame:
    """One row per (file, task): n, TCP of the answers and of the labels, Repeat and InHistory (%)."""
    rows = []
    for file, records in files.items():
        for task in CONTROL_TASKS:
            chosen = [r for r in records if r["task"] == task and not _twin(r)][:per_task]
            if not chosen:
                continue
            answers = llm.generate(model, tokenizer, [r["prompt"] for r in chosen], decoding, progress=False)
            figures = aggregate(score_answer(r, parse_titles(a), catalog) for r, a in zip(chosen, answers))
            labels = aggregate(score_answer(r, catalog.title_list(r["label"]), catalog) for r in chosen if r["label"])
            rows.append({"file": file, "task": task, "n": len(chosen), "tcp_pct": figures["tcp_pct"],
                         "label_tcp_pct": labels["tcp_pct"], "repeat_item_pct": figures["repeat_item_pct"],
                         "in_history_pct": figures["in_history_pct"]})
    return pd.DataFrame(rows)


HISTORY_BINS = (-0.01, 0.0, 1 / 3, 2 / 3, 1.0)
HISTORY_LABELS = ("0", "(0, 1/3]", "(1/3, 2/3]", "(2/3, 1]")


def by_history_table(model, tokenizer, files: dict[str, list[dict]], catalog: Catalog, per_task: int,
                     decoding: llm.Decoding) -> pd.DataFrame:
    """I1-C with and without the sentence, by the share of the history in C: one row per (file, bin)
    with n, TCP with and without (% of the k positions, as stage 06), their difference, and how often
    the first listed title is in C with and without. A model that fits its training lists by
    remembering each user shows the sentence's effect on train and none on test."""
    rows = []
    for file, records in files.items():
        chosen = [r for r in records if r["task"] == "I1-C" and r["history"] and not _twin(r)][:per_task]
        if not chosen:
            continue
        said = llm.generate(model, tokenizer, [r["prompt"] for r in chosen], decoding, progress=False)
        plain = llm.generate(model, tokenizer, [no_control_prompt(r, catalog) for r in chosen], decoding, progress=False)
        for r, with_, without in zip(chosen, said, plain):
            category = r["intent"]["category"]
            row = {"file": file, "share": sum(catalog.in_category(i, category) for i in r["history"]) / len(r["history"])}
            for name, answer in (("with", with_), ("without", without)):
                titles = parse_titles(answer)
                items = catalog.match_many(titles)
                row[f"tcp_{name}"] = 100 * score_answer(r, titles, catalog)["tcp"]
                row[f"first_in_c_{name}"] = 100.0 * bool(items and items[0] is not None
                                                         and catalog.in_category(items[0], category))
            rows.append(row)
    if not rows:
        raise SystemExit("--by-history: no I1-C record with a history in the train or test file")
    frame = pd.DataFrame(rows)
    frame["history_in_c"] = pd.cut(frame.pop("share"), HISTORY_BINS, labels=HISTORY_LABELS)
    table = frame.groupby(["file", "history_in_c"], observed=True).agg(
        n=("tcp_with", "size"), tcp_with=("tcp_with", "mean"), tcp_without=("tcp_without", "mean"),
        first_in_c_with=("first_in_c_with", "mean"), first_in_c_without=("first_in_c_without", "mean"))
    return table.assign(delta=table["tcp_with"] - table["tcp_without"]).reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="tiny", help="a run under --outputs-dir with stages 01-03 finished")
    ap.add_argument("--outputs-dir", default="outputs")
    ap.add_argument("--models", nargs="+", default=["04_sft_unsloth"], help="stage 04/05 dirs of the run")
    ap.add_argument("--per-task", type=int, default=64, help="records decoded per task and file")
    ap.add_argument("--by-history", type=int, default=0, metavar="N",
                    help="also decode the first N I1-C records of each file without the sentence and compare by "
                         "the history's share of C (0: skip)")
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: every core this process may use")
    args = ap.parse_args()
    if args.per_task < 1:
        raise SystemExit(f"--per-task must be >= 1, got {args.per_task}")
    if args.by_history < 0:
        raise SystemExit(f"--by-history must be >= 0 (0: skip), got {args.by_history}")
    try:
        data_dir = paths.input_dir(args.outputs_dir, args.run, "01_data_duckdb")
        instr_dir = paths.input_dir(args.outputs_dir, args.run, "03_instructions")
        specs, _ = evaluate.resolve_models({m: m for m in args.models}, paths.run_dir(args.outputs_dir, args.run))
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    if bad := [s.label for s in specs if s.path is None]:
        raise SystemExit(f"--models: {', '.join(bad)} is not a stage 04/05 dir of run {args.run!r}")
    record.seed_everything(0, args.threads)
    catalog = Catalog(data.load_prepared(data_dir).items)
    files = {"train": tasks.read_records(instr_dir / col.SFT_TRAIN_FILE),
             "test": tasks.read_records(instr_dir / col.TEST_PROMPTS_FILE)}
    decoding = llm.Decoding(max_new_tokens=args.max_new_tokens, batch_size=32)
    tables, by_history, t0 = [], [], time.time()
    for spec in specs:
        model, tokenizer = llm.load_for_inference(spec.path)
        tables.append(fit_table(model, tokenizer, files, catalog, args.per_task, decoding).assign(model=spec.label))
        if args.by_history:
            by_history.append(by_history_table(model, tokenizer, files, catalog, args.by_history, decoding)
                              .assign(model=spec.label))
        del model
    table = pd.concat(tables, ignore_index=True)
    print(table.set_index(["model", "file", "task"]).round(1).to_string())
    figures = {f"{r.model}_{r.file}_{r.task}": round(r.tcp_pct, 1) for r in table.itertuples()}
    if args.by_history:
        bins = pd.concat(by_history, ignore_index=True)
        print("\nI1-C with and without the sentence, by the history's share of C:")
        print(bins.set_index(["model", "file", "history_in_c"]).round(1).to_string())
        figures |= {f"{r.model}_{r.file}_delta_{HISTORY_LABELS.index(r.history_in_c)}": round(r.delta, 1)
                    for r in bins.itertuples()}
    print(record.summary_line("negation_fit", run=args.run, seconds=round(time.time() - t0, 1), **figures))


if __name__ == "__main__":
    main()
