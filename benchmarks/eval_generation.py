"""Benchmark: stage 06's lists per second, the old decoding path against the new one, on the same
prompts and model, and how far the answers agree.

    nice .venv/bin/python benchmarks/eval_generation.py --model smollm2-135m --dataset ml-100k --n 64 --threads 2 --all
    nice .venv/bin/python benchmarks/eval_generation.py --run ml-100k --stage 04_sft_unsloth --n 192 --threads 2

Paths (greedy, batched, KV cache), each adding one lever to the one before:
- `old`: fp32 weights, batch 32, length-sorted batches, transformers' `generate` and its default
  cache, every row decoding to EOS or `max_new_tokens` (stage 06 before 2026-12-02);
- `stop`: stage 06's weights (bfloat16, or fp32 on a CPU without AVX-512: `llm.cpu_bf16_fast`),
  batch `--batch`, and a row stops once it lists more than its k items (`llm.ListOverflow`);
- `+dedup`: a prompt asked twice is decoded once (`predict.distinct_prompts`: the no-control twins
  repeat the user's I0 prompt);
- `+inplace`: the KV cache writes each step in place (`llm.answer_cache`: the same logits, so the
  same lists as `+dedup`) instead of concatenating the whole cache every step;
- `+drop`: recnb's greedy loop (`llm.greedy_rows`): a row that has ended leaves the batch, where
  `generate` computes every row until the last one ends;
- `new` (stage 06 now): `+drop`, and a user's prompts that differ only near their end go in one
  batch and share the prefill of their common prefix (`llm.prefix_families`);
- with `--all`: `fp32+stop` (fp32, batch 32, the stop only: its answers must score exactly as `old`)
  and `bf16` (bfloat16 weights, batch 64, no stop: on a CPU without AVX-512 this is what it costs).
`stage06_speedup` is `new` against `old` on this CPU.

Prompts: with `--run`, that run's stage-03 test prompts as stage 06 draws them: `--n` / 12 users per
test group (`load_test_prompts`, the same users in every group unless `--per-group-users`);
`--stage 04_sft_unsloth` then loads that run's model. Without it, I0 requests (k = 10) built from the first
`--n` users' histories (no prompt repeats there). Agreement is against `old`:
identical parsed lists (first k titles and the item count), and the change of each table figure. bf16
rounds every weight, so some greedy tokens change; the stop changes no figure by construction. The
in-place cache gives the same logits bit for bit; dropping ended rows and sharing prefixes multiply
matrices of other shapes, which can round the last bits of a logit otherwise (`same_lists_*_pct`:
each path against the one before it).
Ends with one `key=value` line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from recnb import artifacts as col
from recnb import data, llm, metrics, paths, prompts, record
from recnb.catalog import Catalog
from recnb.evaluation import predict as evaluate

FIGURES = ("hr", "correct_count_pct", "repeat_item_pct", "non_exist_pct", "in_history_pct", "tcp_pct", "cpa_pct")


def build_prompts(prepared: data.Prepared, n: int, k: int = 10) -> pd.DataFrame:
    """`n` I0 prompts as stage 06 reads them (first n users by id)."""
    titles = dict(zip(prepared.items["item_id"], prepared.items["title"]))
    rows = []
    for rec in prepared.splits.sort_values("user_id").head(n).to_dict("records"):
        history = [*rec["train_items"], rec["valid_item"]][-10:]
        text = prompts.render_instruction("I0", k, [titles[i] for i in history])
        rows.append({"task": "I0", "test_group": "I0", "user_id": rec["user_id"], "k": k,
                     "target": rec["test_item"], "history": history, "intent": {"kind": "I0"},
                     "prompt": prompts.chat_messages(text)})
    return pd.DataFrame(rows)


def run_prompts(run_dir: Path, n: int, seed: int, shared_users: bool) -> pd.DataFrame:
    """About `n` of a finished run's test prompts, as stage 06 draws them: `n` / groups users per group (seeded)."""
    path = run_dir / "03_instructions" / col.TEST_PROMPTS_FILE
    groups = evaluate.load_test_prompts(path)["test_group"].nunique()
    return evaluate.load_test_prompts(path, max(1, n // groups), seed, shared_users)


def decode(name: str, model, tok, test: pd.DataFrame, batch: int, max_new_tokens: int, stop: bool, dedup: bool,
           inplace: bool, drop: bool, share: bool):
    how = llm.Decoding(max_new_tokens=max_new_tokens, batch_size=batch, max_prompt_tokens=512, inplace_cache=inplace,
                       drop_finished=drop, share_prefixes=share)
    t0 = time.perf_counter()
    frame = evaluate.llm_predictions("m", model, tok, test, how, stop_past_k=stop, dedup=dedup)
    seconds = time.perf_counter() - t0
    print(f"  {name:<10} {seconds:8.1f} s  ({len(test) / seconds:.3f} lists/s)", flush=True)
    return frame, seconds


def figures(frame: pd.DataFrame, catalog: Catalog) -> tuple[dict[str, float], list]:
    """Table figures over all prompts (fuzzy matching) and each answer's parsed list (first k, count)."""
    matched = evaluate.match_predictions(frame, catalog)
    scores = evaluate.score_predictions(matched, catalog)
    agg = metrics.aggregate(scores[scores["matcher"] == "fuzzy"].to_dict("records"))
    lists = [(tuple(t[:k]), len(t)) for t, k in zip(matched["titles"], matched["k"])]
    return {f: agg[f] for f in FIGURES}, lists


def same_pct(lists: list, reference: list) -> float:
    """% of answers whose parsed list (first k titles and the count) equals the reference's."""
    return 100 * sum(a == b for a, b in zip(lists, reference, strict=True)) / len(reference)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=llm.SMOLLM2, help="base model name (smollm2-135m, tiny-llama, ...)")
    ap.add_argument("--dataset", default="ml-100k", help="tiny or ml-100k (built in memory; with --run: the run's)")
    ap.add_argument("--run", help="a finished run under outputs/ (e.g. ml-100k): its test prompts over every group")
    ap.add_argument("--stage", help="with --run: a finished stage 04/05 dir of it to load instead of --model")
    ap.add_argument("--n", type=int, default=64, help="prompts")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64, help="batch of every path but old's 32 (stage 06: batch_size)")
    ap.add_argument("--per-group-users", action="store_true",
                    help="with --run: each group draws its own users (stage 06's shared_users: false)")
    ap.add_argument("--all", action="store_true",
                    help="also fp32 with the stop only (shows it changes no figure) and bf16 without the stop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.run:
        run_dir = paths.run_dir("outputs", args.run)
        prepared = data.load_prepared(run_dir / "01_data_duckdb", args.dataset)
        test = run_prompts(run_dir, args.n, seed=0, shared_users=not args.per_group_users)
    else:
        prepared = data.build_dataset(args.dataset, seed=0)
        test = build_prompts(prepared, args.n)
    catalog = Catalog(prepared.items)
    if args.stage and not args.run:
        raise SystemExit("--stage names a stage dir of a run: give --run too")
    model, tok = (llm.load_for_inference(paths.run_dir("outputs", args.run) / args.stage) if args.stage
                  else llm.load_base(args.model))
    source = f"{args.run}/{args.stage}" if args.stage else args.model
    distinct = len(evaluate.distinct_prompts(test)[1])
    print(f"{source}: {len(test)} prompts ({distinct} distinct, {test['test_group'].nunique()} groups), "
          f"{args.threads} thread(s), max_new_tokens {args.max_new_tokens}")
    # stage 06 (params/ml-100k.yaml: dtype bfloat16) decodes in fp32 where this CPU lacks AVX-512 (`llm.cpu_bf16_fast`)
    here = llm.resolve_dtype("bfloat16", torch.device("cpu"))
    b = args.batch
    # (name, weights, batch, stop past k, each distinct prompt once, in-place KV cache, drop ended rows, share prefixes)
    # bf16 last: `model.to` casts in place, and fp32 weights cast back from bf16 keep its rounding
    modes = [("old", torch.float32, 32, False, False, False, False, False),
             *([("fp32+stop", torch.float32, 32, True, False, False, False, False)] if args.all else []),
             ("stop", here, b, True, False, False, False, False), ("+dedup", here, b, True, True, False, False, False),
             ("+inplace", here, b, True, True, True, False, False), ("+drop", here, b, True, True, True, True, False),
             ("new", here, b, True, True, True, True, True),
             *([("bf16", torch.bfloat16, 64, False, False, False, False, False)] if args.all else [])]
    rows, lists_of = [], {}
    for name, dtype, batch, stop, dedup, inplace, drop, share in modes:
        frame, seconds = decode(name, model.to(dtype), tok, test, batch, args.max_new_tokens, stop, dedup, inplace,
                                drop, share)
        figs, lists = figures(frame, catalog)
        lists_of[name] = lists
        rows.append({"path": name, "seconds": seconds, "lists/s": len(test) / seconds,
                     "tokens/list": sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in frame["raw"]) / len(test),
                     "same lists %": same_pct(lists, lists_of["old"]), **figs})
    table = pd.DataFrame(rows).set_index("path")
    table.insert(2, "speedup", table["lists/s"] / table.loc["old", "lists/s"])
    print(table.round(3).T.to_string())
    delta = (table.loc["new", list(FIGURES)] - table.loc["old", list(FIGURES)]).abs()
    step = {name: table.loc[name, "lists/s"] / table.loc[before, "lists/s"]
            for before, name in zip(["stop", "+dedup", "+inplace", "+drop"], ["+dedup", "+inplace", "+drop", "new"])}
    print(record.summary_line(
        "eval_generation", model=source, n=len(test), distinct=distinct, threads=args.threads,
        max_new_tokens=args.max_new_tokens, batch=b, stage06_dtype=str(here).removeprefix("torch."),
        old_lists_per_s=table.loc["old", "lists/s"], new_lists_per_s=table.loc["new", "lists/s"],
        stage06_speedup=table.loc["new", "speedup"], stop_speedup=table.loc["stop", "speedup"],
        dedup_speedup=step["+dedup"], inplace_cache_speedup=step["+inplace"], drop_speedup=step["+drop"],
        share_speedup=step["new"],
        same_lists_dedup_pct=same_pct(lists_of["+dedup"], lists_of["stop"]),
        same_lists_inplace_pct=same_pct(lists_of["+inplace"], lists_of["+dedup"]),
        same_lists_drop_pct=same_pct(lists_of["+drop"], lists_of["+inplace"]),
        same_lists_share_pct=same_pct(lists_of["new"], lists_of["+drop"]),
        same_lists_pct=table.loc["new", "same lists %"], max_figure_change=float(delta.max()),
        max_figure_change_at=str(delta.idxmax())))

if __name__ == "__main__":
    main()
