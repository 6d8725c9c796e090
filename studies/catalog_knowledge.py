"""Can SFT teach a small LLM which films are in which genre, and at what cost? (issue 20, part 3)

    .venv/bin/python studies/catalog_knowledge.py --run ml-100k --template i1 --top 100 --passes 30 --threads 0

The category probe (`recnb.sft.probe`) stays at chance after stage 04 on ml-100k, and the untuned
SmolLM2-135M knows little of these films' genres. This retrains stage 04's model with the run's own
resolved params (`--stage`'s params.json; `--steps`, `--finetune`, `--lr` override them) on dense
"catalog lists": the paper's I3+C prompt ("I would like to buy some 'C' products") answered by up
to `--per-list` titles of C (`--template i1`: the I1+C prompt, with a train user's history), every
(item, category) pair of the `--top` most popular items `--passes` times in shuffled lists;
`--mix` adds that share of stage 03's SFT train records.
Then, for the untuned and the tuned model:

- the stage-04 probe on the valid users (`category_auc`, `shift`): teacher candidates, I1+C prompts;
- `known_i3`: the same AUC (an in-C title outscores an out-of-C one) over the trained items, under
  the training template, averaged over categories with ≥ 5 trained items: was the catalog learned?
- `known_i1`: over the trained items under the probe users' I1+C prompts: does it carry over to
  the prompts that ask for control with a history?

Ends with one line of `key=value` figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recnb import artifacts as col
from recnb import data, llm, paths, prompts, record, tasks
from recnb.catalog import Catalog
from recnb.instructions.build import catalog_list_specs, render_row, top_items
from recnb.sft.config import SFTConfig
from recnb.sft.probe import auc, category_probe, first_item_scores, line_break, probe_cases
from recnb.sft.train import for_validation, train_sft


def catalog_lists(catalog: Catalog, items: list[int], passes: int, per_list: int, seed: int = 0,
                  histories: list[tuple[int, list[int]]] | None = None, history_len: int = 0) -> list[dict]:
    """Stage 03's catalog lists (`recnb.instructions.build.catalog_list_specs`: I3+C, or I1+C with
    `histories` of (user, item ids), of which the prompt shows the last `history_len`, 0: all) as SFT
    records in stage 03's format, shuffled."""
    rng = np.random.default_rng(seed)
    specs = catalog_list_specs(catalog, items, passes, per_list, rng, histories, history_len)
    return [render_row(specs[j], catalog) for j in rng.permutation(len(specs))]


def known_auc(model, tokenizer, catalog: Catalog, items: list[int], asks: list[tuple[str, list[dict]]],
              per_side: int, max_prompt_tokens: int = 512) -> float:
    """Mean over `asks` (category, chat prompt) of P(an in-category title among `items` outscores one
    outside it) as the first answer item (log-prob per token, as the probe scores). Categories with
    fewer than 5 of `items` are skipped; NaN when none is left."""
    aucs, brk = [], line_break(tokenizer)
    for category, chat in asks:
        inside = [i for i in items if i in catalog.items_in(category)][:per_side]
        outside = [i for i in items if i not in catalog.items_in(category)][:per_side]
        if len(inside) < 5:
            continue
        per_token = first_item_scores(model, tokenizer, chat, [f" {catalog.title(i)}{brk}" for i in inside + outside],
                                      max_prompt_tokens)
        aucs.append(auc(per_token[:len(inside)], per_token[len(inside):]))
    return float(np.mean(aucs)) if aucs else float("nan")


def i3_asks(catalog: Catalog) -> list[tuple[str, list[dict]]]:
    """One I3+C prompt (10 items, the first intention phrase) per category: the training template."""
    return [(c, prompts.chat_messages(prompts.render_instruction("I3+C", 10, category=c))) for c in catalog.categories]


def i1_asks(valid: list[dict], users: int) -> list[tuple[str, list[dict]]]:
    """The first `users` valid I1+C records as (category, prompt): the probe's prompts, with history."""
    chosen = [r for r in valid if r["task"] == "I1+C"][:users]
    return [(r["intent"]["category"], r["prompt"]) for r in chosen]


def figures(model, tokenizer, catalog: Catalog, items: list[int], cases: list[dict], valid: list[dict],
            users: int, per_side: int) -> dict[str, float]:
    """The probe's figures, `known_i3` and `known_i1` of one model."""
    probe = category_probe(model, tokenizer, cases, catalog, progress=True)
    return {"category_auc": probe["category_auc"], "category_auc_se": probe["category_auc_se"],
            "shift": probe["shift"], "known_i3": known_auc(model, tokenizer, catalog, items, i3_asks(catalog), per_side),
            "known_i1": known_auc(model, tokenizer, catalog, items, i1_asks(valid, users), per_side)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="ml-100k", help="a run under --outputs-dir with stages 01-03 finished")
    ap.add_argument("--outputs-dir", default="outputs")
    ap.add_argument("--stage", default="04_sft_unsloth", help="the SFT stage whose params.json to reuse")
    ap.add_argument("--top", type=int, default=100, help="catalog lists cover the N most popular items (0: all)")
    ap.add_argument("--passes", type=int, default=60, help="times each (item, category) pair is listed")
    ap.add_argument("--per-list", type=int, default=20, help="titles per catalog list")
    ap.add_argument("--template", choices=("i3", "i1"), default="i3",
                    help="catalog lists answer I3+C prompts, or I1+C prompts with a train user's history")
    ap.add_argument("--history-len", type=int, default=0,
                    help="with --template i1: the lists show the last N history items (stage 03's catalog_history_len; "
                         "0: all). known_i1 and the probe keep the valid prompts' whole histories")
    ap.add_argument("--mix", type=float, default=0.0, help="share of stage 03's SFT train records added")
    ap.add_argument("--steps", type=int, default=70, help="optimizer steps (make run: 70)")
    ap.add_argument("--finetune", choices=("lora", "full"), default=None, help="default: the params file's")
    ap.add_argument("--lr", type=float, default=None, help="default: the params file's")
    ap.add_argument("--users", type=int, default=32, help="valid users of the probe and of known_i1")
    ap.add_argument("--per-side", type=int, default=10, help="candidates in C and outside C")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: every core this process may use")
    args = ap.parse_args()
    for name in ("passes", "per_list", "steps", "users", "per_side"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.mix <= 1:
        raise SystemExit(f"--mix must be in [0, 1], got {args.mix}")
    if args.history_len < 0:
        raise SystemExit(f"--history-len must be >= 0 (0: the whole history), got {args.history_len}")
    if args.history_len and args.template != "i1":
        raise SystemExit("--history-len needs --template i1 (the I3 lists show no history)")
    try:
        data_dir = paths.input_dir(args.outputs_dir, args.run, "01_data_duckdb")
        teacher_dir = paths.input_dir(args.outputs_dir, args.run, "02_sasrec")
        instr_dir = paths.input_dir(args.outputs_dir, args.run, "03_instructions")
        stage_dir = paths.input_dir(args.outputs_dir, args.run, args.stage)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    block = {**record.read_json(stage_dir / col.PARAMS_FILE), "max_steps": args.steps}
    block.update({k: v for k, v in (("finetune", args.finetune), ("learning_rate", args.lr)) if v is not None})
    cfg = SFTConfig.from_params(block)
    record.seed_everything(cfg.seed, args.threads)
    catalog = Catalog(data.load_prepared(data_dir).items)
    items = top_items(catalog, args.top)
    train = tasks.read_records(instr_dir / col.SFT_TRAIN_FILE)
    histories = ([(r["user_id"], [int(i) for i in r["history"]]) for r in train if r["task"] == "I0"]
                 if args.template == "i1" else None)
    records = catalog_lists(catalog, items, args.passes, args.per_list, cfg.seed, histories, args.history_len)
    n_catalog = len(records)
    if args.mix:
        rng = np.random.default_rng(cfg.seed)
        records += [train[j] for j in rng.permutation(len(train))[:round(args.mix * len(train))]]
        records = [records[j] for j in rng.permutation(len(records))]
    valid = tasks.read_records(instr_dir / col.SFT_VALID_FILE)
    cases = probe_cases(valid, pd.read_parquet(teacher_dir / col.TEACHER_FILE), catalog, args.users, args.per_side)
    if not cases:
        raise SystemExit(f"{instr_dir / col.SFT_VALID_FILE}: no I1+C prompt with enough teacher candidates")
    print(f"{n_catalog} catalog lists ({len(items)} items x {args.passes} passes) + {len(records) - n_catalog} "
          f"stage-03 records; {cfg.finetune}, lr {cfg.learning_rate}, {cfg.max_steps} steps of {cfg.effective_batch}")
    base, tokenizer = llm.load_base(cfg.base_model, dtype=cfg.valid_dtype)
    rows = {"untuned": figures(base, tokenizer, catalog, items, cases, valid, args.users, args.per_side)}
    del base
    with tempfile.TemporaryDirectory() as scratch:
        result, tokenizer = train_sft(records, cfg, Path(scratch))
    log = result.log
    model = for_validation(result.model, cfg)
    rows["tuned"] = figures(model, tokenizer, catalog, items, cases, valid, args.users, args.per_side)
    table = pd.DataFrame(rows).T
    print(table.round(3).to_string())
    seen = float(log["epoch"].max()) * args.passes  # records are drawn uniformly: the lists' share of an epoch
    print(f"trained {result.train_seconds:.0f} s: each pair listed {seen:.1f} times; "
          f"loss {log['loss'].iloc[0]:.3f} -> {log['loss'].iloc[-1]:.3f}")
    print(record.summary_line(
        "catalog_knowledge", run=args.run, template=args.template, history_len=args.history_len, top=args.top, passes=args.passes, per_list=args.per_list, mix=args.mix,
        steps=cfg.max_steps, finetune=cfg.finetune, lr=cfg.learning_rate, train_s=round(result.train_seconds, 1),
        train_tokens=result.tokens,
        seen_passes=round(seen, 1), loss_first=float(log["loss"].iloc[0]),
        loss_last=float(log["loss"].iloc[-1]),
        **{f"{m}_{k}": v for m, r in rows.items() for k, v in r.items() if not k.endswith("_se")}))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"[{time.time() - t0:.0f} s]")
