"""Does a model know which titles are in a category? A likelihood probe behind TCP(+C).

    .venv/bin/python studies/category_probe.py --run ml-100k \\
        --models base 04_sft_unsloth-long 05_ppo-ctl

PPO can only reinforce the lists it samples, so TCP(+C) can rise only where the policy already
puts more probability on in-category titles once asked to. This measures that directly, without
sampling. For each of `--users` valid users with an I1+C prompt (and the I0 prompt with the same
history, stage 03's `sft_valid.jsonl`), the candidates are the teacher's top `--per-side` titles in
C and top titles outside C (`teacher_topk.parquet`, history excluded: all plausible for the user).
Each candidate is scored as the first item of the answer, log P(" <title>\\n" | prompt + "1.") per
token (`recnb.llm.continuation_logprobs`). Printed per model:

- auc_ctl: P(an in-C candidate outscores an out-of-C one) under the I1+C prompt (0.5: cannot tell);
- auc_noctl: the same under the I0 prompt (the model's taste alone);
- shift: mean over users of [mean Δ in C − mean Δ outside C], Δ = log-prob per token with the control
  sentence minus without: how far the sentence moves the model toward C (nats per token, 0: not at all);
- *_se: the standard error of those means over users.

Ends with one line of `key=value` figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recnb import artifacts as col
from recnb import data, llm, paths, record, tasks
from recnb.catalog import Catalog
from recnb.evaluation import predict as evaluate


def auc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(a random in-C score > a random out-of-C score), ties counting one half (Mann-Whitney)."""
    diff = inside[:, None] - outside[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def se(values: list[float]) -> float:
    """Standard error of the mean (NaN for fewer than two values)."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def probe_pairs(valid: list[dict], teacher: pd.DataFrame, catalog: Catalog, users: int,
                per_side: int) -> list[dict]:
    """Users with an I1+C and an I0 valid prompt on the same history, and their candidate titles."""
    plain = {(r["user_id"], tuple(r["history"])): r for r in valid if r["task"] == "I0"}
    ranked = teacher[teacher["split"] == "valid"].set_index("user_id")["topk_items"]
    pairs = []
    for r in valid:
        base = plain.get((r["user_id"], tuple(r["history"])))
        if r["task"] != "I1+C" or base is None or r["user_id"] not in ranked.index:
            continue
        in_c = catalog.items_in(r["intent"]["category"])
        history = set(r["history"])
        ranking = [int(i) for i in ranked[r["user_id"]] if int(i) not in history]
        inside = [i for i in ranking if i in in_c][:per_side]
        outside = [i for i in ranking if i not in in_c][:per_side]
        if len(inside) >= per_side // 2 and len(outside) == per_side:
            pairs.append({"ctl": r, "noctl": base, "inside": inside, "outside": outside})
        if len(pairs) == users:
            break
    return pairs


def score_model(model, tokenizer, pairs: list[dict], catalog: Catalog, max_prompt_tokens: int) -> dict:
    """auc_ctl, auc_noctl and shift of one model over the probe pairs."""
    aucs = {"ctl": [], "noctl": []}
    shifts = []
    for pair in tqdm(pairs, desc="users", leave=False):
        titles = [f" {catalog.title(i)}\n" for i in pair["inside"] + pair["outside"]]
        n_in = len(pair["inside"])
        per_token = {}
        for key in ("ctl", "noctl"):
            prompt = llm.render_prompts(tokenizer, [pair[key]["prompt"]], max_prompt_tokens)[0] + "1."
            lp = llm.continuation_logprobs(model, tokenizer, prompt, titles)
            per_token[key] = np.array([s / n for s, n in lp])
            aucs[key].append(auc(per_token[key][:n_in], per_token[key][n_in:]))
        delta = per_token["ctl"] - per_token["noctl"]
        shifts.append(delta[:n_in].mean() - delta[n_in:].mean())
    return {"auc_ctl": float(np.mean(aucs["ctl"])), "auc_ctl_se": se(aucs["ctl"]),
            "auc_noctl": float(np.mean(aucs["noctl"])), "shift": float(np.mean(shifts)),
            "shift_se": se(shifts), "users": len(pairs)}


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
    pairs = probe_pairs(tasks.read_records(instr_dir / col.SFT_VALID_FILE),
                        pd.read_parquet(teacher_dir / col.TEACHER_FILE), catalog, args.users, args.per_side)
    if not pairs:
        raise SystemExit(f"{instr_dir / col.SFT_VALID_FILE}: no I1+C prompt with an I0 twin and enough candidates")
    rows = {}
    for spec in specs:
        t0 = time.time()
        model, tokenizer = evaluate.load_model(spec, args.base_model)
        rows[spec.label] = score_model(model, tokenizer, pairs, catalog, args.max_prompt_tokens)
        rows[spec.label]["seconds"] = round(time.time() - t0, 1)
        del model
    table = pd.DataFrame(rows).T
    print(table.round(3).to_string())
    print(record.summary_line("category_probe", run=args.run, **{
        f"{m}_{k}": v for m, r in rows.items() for k, v in r.items() if k in ("auc_ctl", "auc_noctl", "shift")}))


if __name__ == "__main__":
    main()
