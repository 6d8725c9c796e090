"""Decoding study on stage 04's valid prompts: does the SFT model's HR@10 of 0 come from decoding?

    nice .venv/bin/python benchmarks/sft_decoding.py --run-dir outputs/ml-100k --threads 2

Answers the same valid slice stage 04 scores (`n_valid_per_task` per task, from its `params.json`)
with the untuned base and the SFT model (the stage's adapter merged), under each decoding mode:

- `free`: greedy, as stage 04 and stage 06 decode;
- `rep-answer:P`: greedy with transformers' token repetition penalty P over the answer tokens only
  (`RepetitionPenaltyLogitsProcessor(prompt_ignore_length=...)`);
- `rep-all:P`: the same penalty over prompt and answer (transformers' `repetition_penalty=P`);
- `constrained`: stage 06's catalog trie (catalog titles only, no repeats, no history items, at
  most k lines);
- `beam:N`: beam search with N beams (whole-answer likelihood instead of one token at a time).

Scores every answer with stage 04's scorer (its `fuzzy` setting). Penalty modes decode all prompts in
one left-padded batch so that one prompt length holds for every row. Prints a table and ends with
one `key=value` line (HR@10, TCP, RepeatItem, NonExist per model and mode).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from recnb import columns as col
from recnb import evaluate, llm, paths, record, sft
from recnb.parse import Catalog


def decoding(mode: str, tokenizer, records: list[dict], items: pd.DataFrame, *, batch_size: int,
             max_new_tokens: int, max_prompt_tokens: int) -> dict:
    """The `llm.generate` keyword arguments (batch size, logits processors, beams) of a decoding mode."""
    name, _, value = mode.partition(":")
    if name == "free":
        return {"batch_size": batch_size}
    if name == "beam" and value:
        return {"batch_size": batch_size, "num_beams": int(value)}
    if name == "constrained":  # the valid records carry the prompt, history and k make_constraint reads
        constraint = evaluate.make_constraint(tokenizer, items, pd.DataFrame(records), max_new_tokens=max_new_tokens,
                                              max_prompt_tokens=max_prompt_tokens)
        return {"batch_size": batch_size, "logits_processor": LogitsProcessorList([constraint])}
    if name in ("rep-answer", "rep-all") and value:
        ignore = None
        if name == "rep-answer":  # one left-padded batch: every row's prompt ends at the longest prompt's length
            texts = llm.render_prompts(tokenizer, [r["prompt"] for r in records], max_prompt_tokens)
            ignore = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        processor = RepetitionPenaltyLogitsProcessor(float(value), prompt_ignore_length=ignore)
        return {"batch_size": len(records), "logits_processor": LogitsProcessorList([processor])}
    raise SystemExit(f"--modes: unknown mode {mode!r}; use free, constrained, beam:N, rep-answer:P or rep-all:P")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="outputs/ml-100k", help="a finished run (stages 01, 03 and 04)")
    ap.add_argument("--stage", default="04_sft_unsloth", help="the SFT stage dir inside --run-dir")
    ap.add_argument("--modes", default="free,rep-answer:1.15,rep-all:1.2,constrained,beam:4")
    ap.add_argument("--models", default="base,sft", help="base (untuned), sft (the stage's adapter), or both")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run_dir).resolve()  # relative to the working directory, as before
    try:
        params_file = paths.input_dir(run.parent, run.name, args.stage) / col.PARAMS_FILE
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    params = record.read_json(params_file)
    records = sft.valid_slice(sft.read_jsonl(run / "03_instructions" / sft.VALID_FILE), int(params["n_valid_per_task"]))
    items = pd.read_parquet(run / "01_data_duckdb" / "items.parquet")
    catalog, fuzzy = Catalog(items), bool(params.get("fuzzy", False))
    kw = {"max_new_tokens": int(params["max_new_tokens"]), "max_prompt_tokens": int(params["max_prompt_tokens"])}
    print(f"{run / args.stage}: {len(records)} valid prompts, {'fuzzy' if fuzzy else 'exact'} matching, "
          f"{args.threads} thread(s)")
    rows = []
    labels = args.models.split(",")
    if not labels or set(labels) - {"base", "sft"}:
        raise SystemExit(f"--models {args.models!r}: use base, sft or base,sft")
    for label in labels:
        model, tok = (llm.load_base(params["base_model"]) if label == "base"
                      else llm.load_for_inference(run / args.stage))
        for mode in args.modes.split(","):
            how = decoding(mode, tok, records, items, batch_size=args.batch_size, **kw)
            t0 = time.perf_counter()
            answers = llm.generate(model, tok, [r["prompt"] for r in records], progress=False, **how, **kw)
            seconds = time.perf_counter() - t0
            scores = sft.score_answers(records, answers, catalog, fuzzy=fuzzy, label=label)
            summary = sft.summarise_scores(scores)["all"]
            firsts = {a.splitlines()[0].strip() for a in answers if a.strip()}
            rows.append({"model": label, "mode": mode, "HR@10": summary["hr"], "TCP(+C) %": summary["tcp_plus_c_pct"],
                         "TCP(-C) %": summary["tcp_minus_c_pct"],
                         "CPA %": summary["cpa_pct"], "CorrectCount %": summary["correct_count_pct"],
                         "RepeatItem %": summary["repeat_item_pct"], "NonExist %": summary["non_exist_pct"],
                         "InHistory %": summary["in_history_pct"], "distinct first lines": len(firsts),
                         "seconds": seconds})
            print(f"  {label:<5} {mode:<16} {seconds:7.1f} s  first answer: {answers[0][:120]!r}", flush=True)
        del model
    table = pd.DataFrame(rows).set_index(["model", "mode"])
    print(table.round(3).to_string())
    figures = " ".join(
        f"{m}_{mode.replace(':', '')}_{key}={table.loc[(m, mode), col]:.3f}"
        for m, mode in table.index for key, col in (("hr", "HR@10"), ("tcp_plus_c", "TCP(+C) %"), ("repeat", "RepeatItem %"),
                                                    ("nonexist", "NonExist %")))
    print(f"sft_decoding run={run.name} n={len(records)} {figures}")


if __name__ == "__main__":
    main()
