"""Decoding study on stage 04's valid prompts: does the SFT model's HR@10 of 0 come from decoding?

    nice .venv/bin/python studies/sft_decoding.py --run ml-100k --threads 2

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
from dataclasses import replace

import pandas as pd
import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from recnb import artifacts as col
from recnb import data, llm, paths, record, sft, tasks
from recnb.catalog import Catalog
from recnb.evaluation import predict as evaluate


def decoding(mode: str, tokenizer, records: list[dict], items: pd.DataFrame, base: llm.Decoding) -> tuple:
    """(`llm.Decoding`, logits processors or None) of a decoding mode, from the stage's own settings."""
    name, _, value = mode.partition(":")
    if name == "free":
        return base, None
    if name == "beam" and value:
        return replace(base, num_beams=int(value)), None
    if name == "constrained":  # the valid records carry the prompt, history and k make_constraint reads
        return base, LogitsProcessorList([evaluate.make_constraint(tokenizer, items, pd.DataFrame(records), base)])
    if name in ("rep-answer", "rep-all") and value:
        ignore = None
        if name == "rep-answer":  # one left-padded batch of whole prompts (no shared prefixes): every row's
            # prompt ends at the longest prompt's length
            texts = llm.render_prompts(tokenizer, [r["prompt"] for r in records], base.max_prompt_tokens)
            ignore = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        processor = RepetitionPenaltyLogitsProcessor(float(value), prompt_ignore_length=ignore)
        return replace(base, batch_size=len(records), share_prefixes=False), LogitsProcessorList([processor])
    raise SystemExit(f"--modes: unknown mode {mode!r}; use free, constrained, beam:N, rep-answer:P or rep-all:P")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="ml-100k", help="a run under outputs/ with stages 01, 03 and 04 finished")
    ap.add_argument("--stage", default="04_sft_unsloth", help="the SFT stage dir of the run")
    ap.add_argument("--modes", default="free,rep-answer:1.15,rep-all:1.2,constrained,beam:4")
    ap.add_argument("--models", default="base,sft", help="base (untuned), sft (the stage's adapter), or both")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        stage = paths.input_dir("outputs", args.run, args.stage)
        instr_dir = paths.input_dir("outputs", args.run, "03_instructions")
        data_dir = paths.input_dir("outputs", args.run, "01_data_duckdb")
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    cfg = sft.SFTConfig.from_params(record.read_json(stage / col.PARAMS_FILE))
    records = sft.valid_slice(tasks.read_records(instr_dir / col.SFT_VALID_FILE), cfg.n_valid_per_task)
    items = data.load_prepared(data_dir).items
    catalog, fuzzy = Catalog(items), cfg.fuzzy
    base = replace(sft.decoding(cfg), batch_size=args.batch_size)
    print(f"{stage}: {len(records)} valid prompts, {'fuzzy' if fuzzy else 'exact'} matching, "
          f"{args.threads} thread(s)")
    rows = []
    labels = args.models.split(",")
    if not labels or set(labels) - {"base", "sft"}:
        raise SystemExit(f"--models {args.models!r}: use base, sft or base,sft")
    for label in labels:
        model, tok = llm.load_base(cfg.base_model) if label == "base" else llm.load_for_inference(stage)
        for mode in args.modes.split(","):
            how, processors = decoding(mode, tok, records, items, base)
            t0 = time.perf_counter()
            answers = llm.generate(model, tok, [r["prompt"] for r in records], how, logits_processor=processors,
                                   progress=False)
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
    figures = {f"{m}_{mode.replace(':', '')}_{key}": float(table.loc[(m, mode), column])
               for m, mode in table.index for key, column in (("hr", "HR@10"), ("tcp_plus_c", "TCP(+C) %"),
                                                              ("repeat", "RepeatItem %"), ("nonexist", "NonExist %"))}
    print(record.summary_line("sft_decoding", run=args.run, stage=args.stage, n=len(records), **figures))


if __name__ == "__main__":
    main()
