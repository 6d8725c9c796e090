"""Over SFT's epochs, does "no C" on the validation users track "no C" on the test users?

    .venv/bin/python studies/sft_checkpoints.py --run tiny --checks 8 12 16 20 24 --valid-per-type 64

The tiny v2 obeys "no C" on the test users on some seeds and not on others (docs/RESULTS.md). If
the sentence's effect on the validation users tracks the test users' effect during training,
stage 04 could keep the checkpoint that obeys it best, as stage 05 keeps its best PPO update. This
retrains stage 04's main path (v2) from the run's own `04_sft_unsloth/params.json` and records
(the same seed, so the same model as stage 04 at its last epoch: the script prints both final
losses) and, at each epoch of `--checks`, decodes greedy answers to

- validation I1−C and I1+C prompts: stage 03's valid builder with `--valid-per-type` prompts per
  task (stage 03 itself writes 16), each with and without its control sentence (the I0 template on
  the same history, as stage 03 renders a test prompt's `_nocontrol` twin);
- every test prompt of the I1−C and I1+C groups and of their `_nocontrol` twins (all the test
  users, not stage 06's 50 per group), and the test and validation I0 prompts;

and gives, per check, the sentence's effect (TCP with − without, points) on each, and the I0
illegal items (Repeat + NonExist + InHistory, % of items, summed as `tiny_seeds` sums them). The validation prompts come from the
same users as the test prompts, one item earlier (leave-one-out splits). Nothing of the run is
written. Ends with one key=value line; `--csv` also writes the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback

from recnb import artifacts as col
from recnb import data, llm, paths, record, sft, tasks
from recnb.answer import parse_titles
from recnb.catalog import Catalog
from recnb.evaluation.predict import distinct_prompts
from recnb.instructions.build import build_valid, no_control_prompt, render_row
from recnb.instructions.config import InstructionConfig
from recnb.instructions.sets import build_context, load_teacher
from recnb.metrics import aggregate, score_answer

CONTROL = ("I1-C", "I1+C")


def valid_records(run_dir: Path, prepared: data.Prepared, per_type: int) -> list[dict]:
    """Stage 03's valid prompts drawn again with `per_type` per task (its own params otherwise)."""
    params = json.loads((run_dir / "03_instructions" / "params.json").read_text())
    config = InstructionConfig.from_params(params | {"valid_per_type": per_type})
    ctx = build_context(prepared, load_teacher(run_dir / "02_sasrec"), config)
    return [render_row(s, ctx.catalog) for s in build_valid(ctx)]


def prompt_sets(valid: list[dict], test: list[dict], catalog: Catalog) -> dict[str, tuple[list[dict], list]]:
    """name -> (records, prompts): each control task with and without its sentence, and I0."""
    sets = {}
    for task in CONTROL:
        chosen = [r for r in valid if r["task"] == task]
        sets[f"valid {task}"] = (chosen, [r["prompt"] for r in chosen])
        sets[f"valid {task} twin"] = (chosen, [no_control_prompt(r, catalog) for r in chosen])
        for group, name in ((task, f"test {task}"), (f"{task}_nocontrol", f"test {task} twin")):
            chosen = [r for r in test if r["test_group"] == group]
            sets[name] = (chosen, [r["prompt"] for r in chosen])
    for name, chosen in (("valid I0", [r for r in valid if r["task"] == "I0"]),
                         ("test I0", [r for r in test if r["test_group"] == "I0"])):
        sets[name] = (chosen, [r["prompt"] for r in chosen])
    return sets


def score_sets(model, tokenizer, sets: dict, catalog: Catalog, decoding: llm.Decoding) -> dict[str, float]:
    """TCP (%) of each control set, illegal items (%) of each I0 set.

    Every distinct prompt (`evaluation.predict.distinct_prompts`, as stage 06) is decoded once, in one
    `llm.generate` call over all the sets: a test twin is its user's I0 prompt, and the valid twins
    of I1+C and I1−C coincide where their histories and k do.
    """
    asked = pd.DataFrame([{"set": name, "prompt": p, "k": r["k"]}
                          for name, (records, prompts) in sets.items() for r, p in zip(records, prompts)],
                         columns=["set", "prompt", "k"])
    codes, first = distinct_prompts(asked)
    said = llm.generate(model, tokenizer, list(asked["prompt"].iloc[first]), decoding, progress=False)
    asked["answer"] = [said[c] for c in codes]
    figures = {}
    for name, (records, _) in sets.items():
        answers = asked.loc[asked["set"] == name, "answer"]
        f = aggregate(score_answer(r, parse_titles(a), catalog) for r, a in zip(records, answers))
        figures[name] = f["repeat_item_pct"] + f["non_exist_pct"] + f["in_history_pct"] if name.endswith("I0") else f["tcp_pct"]
    return figures


def effects(figures: dict[str, float]) -> dict[str, float]:
    """The sentence's effect (with − without, points) per file and task, and I0's illegal items."""
    out = {}
    for file in ("valid", "test"):
        for task, short in (("I1-C", "minus"), ("I1+C", "plus")):
            out[f"{file}_{short}"] = figures[f"{file} {task}"] - figures[f"{file} {task} twin"]
        out[f"{file}_illegal"] = figures[f"{file} I0"]
    return out


def summarise(table: pd.DataFrame) -> dict[str, float]:
    """How well the validation "no C" effect tracks the test one over the checks, and what choosing
    the checkpoint by it would give: the check with the most negative validation effect."""
    best = table.loc[table["valid_minus"].idxmin()]
    last = table.iloc[-1]
    return {"corr_minus": round(float(table["valid_minus"].corr(table["test_minus"])), 3),
            "mean_gap_minus": round(float((table["valid_minus"] - table["test_minus"]).abs().mean()), 1),
            "last_epoch": int(last["epoch"]), "test_minus_last": round(float(last["test_minus"]), 1),
            "best_valid_epoch": int(best["epoch"]), "test_minus_at_best": round(float(best["test_minus"]), 1),
            "test_minus_min": round(float(table["test_minus"].min()), 1)}


class Checks(TrainerCallback):
    """Scores the model at the end of each listed epoch (back in train mode after)."""

    def __init__(self, epochs: set[int], score):
        self.epochs, self.score, self.rows = epochs, score, []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        epoch = round(state.epoch)
        if epoch not in self.epochs:
            return
        start = time.time()
        model.eval()
        row = {"epoch": epoch, **effects(self.score(model))}
        model.train()
        self.rows.append(row)
        print(f"epoch {epoch}: no C valid {row['valid_minus']:+.1f} test {row['test_minus']:+.1f} | more C valid "
              f"{row['valid_plus']:+.1f} test {row['test_plus']:+.1f} | I0 illegal valid {row['valid_illegal']:.1f} "
              f"test {row['test_illegal']:.1f} ({time.time() - start:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="tiny", help="a run under --outputs-dir with stages 01-04 finished")
    ap.add_argument("--outputs-dir", default="outputs")
    ap.add_argument("--checks", type=int, nargs="+", default=[8, 12, 16, 20, 24], help="epochs to score at")
    ap.add_argument("--valid-per-type", type=int, default=64, help="validation prompts per task (stage 03: 16)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 0: every core this process may use (stage 04's own, tiny: 1, retrains its model)")
    ap.add_argument("--csv", default="", help="also write the table here")
    args = ap.parse_args()
    if args.valid_per_type < 1:
        raise SystemExit(f"--valid-per-type must be >= 1, got {args.valid_per_type}")
    run_dir = paths.run_dir(args.outputs_dir, args.run)
    stage = run_dir / "04_sft_unsloth"
    if not (stage / "params.json").exists():
        raise SystemExit(f"{stage}/params.json not found; run stage 04_sft_unsloth of run {args.run!r} first")
    params = json.loads((stage / "params.json").read_text())
    cfg = sft.SFTConfig.from_params(params)
    if cfg.max_steps > 0:
        raise SystemExit(f"{stage} trained max_steps = {cfg.max_steps}, not epochs; the checks need an epochs run")
    if any(not 1 <= e <= cfg.epochs for e in args.checks):
        raise SystemExit(f"--checks must be epochs within stage 04's 1..{cfg.epochs:g}, got {args.checks}")
    record.seed_everything(cfg.seed, args.threads)
    prepared = data.load_prepared(run_dir / "01_data_duckdb")
    catalog = Catalog(prepared.items)
    sets = prompt_sets(valid_records(run_dir, prepared, args.valid_per_type),
                       tasks.read_records(run_dir / "03_instructions" / col.TEST_PROMPTS_FILE), catalog)
    print(", ".join(f"{name}: {len(recs)}" for name, (recs, _) in sets.items()))
    model, tokenizer, wrapped = sft.load_trainable(cfg)
    decoding = llm.Decoding(max_new_tokens=cfg.max_new_tokens, batch_size=64)
    checks = Checks(set(args.checks), lambda m: score_sets(m, tokenizer, sets, catalog, decoding))
    start = time.time()
    with tempfile.TemporaryDirectory() as scratch:  # trainer's output_dir (no checkpoints are saved)
        trainer = sft.build_trainer(model, tokenizer, sft.load_train_records(run_dir / "03_instructions", cfg), cfg,
                                    Path(scratch), wrapped, progress=True)
        trainer.add_callback(checks)
        trainer.train()
    table = pd.DataFrame(checks.rows)
    print(table.round(1).to_string(index=False))
    stage_loss = json.loads((stage / "metrics.json").read_text())["train"].get("final_loss")
    print(f"final loss: this run {sft.train_log(trainer)['loss'].iloc[-1]:.4f}, stage 04's {stage_loss}")
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(record.summary_line("sft_checkpoints", run=args.run, seed=cfg.seed, checks="/".join(map(str, args.checks)),
                              seconds=round(time.time() - start), **summarise(table)))


if __name__ == "__main__":
    main()
