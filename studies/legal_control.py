"""How much of each model's control is legal items: a check on stage 06's TCP and CPA.

    .venv/bin/python studies/legal_control.py --run ml-100k --eval 06_eval-long

TCP@K (Eq. 6) counts positions, so a list that repeats one in-category title ten times scores 100%
while holding one legal item. This reads a stage-06 `predictions.parquet` (fuzzy ids, free decoding)
and prints per model:

- illegal items in % of the first k positions of the control lists (I1, I2): not a catalog title,
  a repeat or a history item, the union `recnb.rewards.legality` pays -1 for;
- distinct legal items in C and outside C per I1+C / I1-C list (with and without the control
  sentence): what an intention-following list is made of, which repeats cannot fill.

Ends with one line of `key=value` figures (`<model>_illegal_pct=...`).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from recnb import artifacts as col
from recnb import data, paths, record, rewards
from recnb.catalog import Catalog

I1_GROUPS = ("I1+C", "I1+C_nocontrol", "I1-C", "I1-C_nocontrol")


def legal_counts(predictions: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """One row per free-decoded answer: k, illegal items among the first k, legal items in / out of C."""
    rows = []
    for r in predictions[~predictions["constrained"]].itertuples():
        intent = json.loads(r.intent)  # stored as JSON text (CONTRACTS.md, 06_eval)
        ids = [None if pd.isna(i) else int(i) for i in r.item_ids_fuzzy][: r.k]
        legal = rewards.legality(ids, k=r.k, history=set(r.history))
        in_c = catalog.items_in(intent["category"]) if intent.get("category") else frozenset()
        rows.append({"model": r.model, "test_group": r.test_group, "positions": len(ids),
                     "illegal": len(ids) - sum(legal),
                     "legal_in_c": sum(ok and i in in_c for i, ok in zip(ids, legal)),
                     "legal_out_c": sum(ok and i not in in_c for i, ok in zip(ids, legal))})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="ml-100k", help="a run under outputs/ with a finished stage 06")
    ap.add_argument("--eval", default="06_eval", help="its stage-06 dir (06_eval or 06_eval-<variant>)")
    args = ap.parse_args()
    try:
        eval_dir = paths.input_dir("outputs", args.run, args.eval)
        data_dir = paths.input_dir("outputs", args.run, "01_data_duckdb")
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    items = data.load_prepared(data_dir, record.read_json(eval_dir / col.PARAMS_FILE)["dataset"]).items
    counts = legal_counts(pd.read_parquet(eval_dir / col.PREDICTIONS_FILE), Catalog(items))

    control = counts[counts["test_group"].str.match(r"I[12][^_]*$")]
    illegal = 100 * control.groupby("model")["illegal"].sum() / control.groupby("model")["positions"].sum()
    i1 = counts[counts["test_group"].isin(I1_GROUPS)]
    per_list = i1.groupby(["model", "test_group"])[["legal_in_c", "legal_out_c"]].mean().unstack("test_group")
    print(f"{eval_dir}: illegal items, % of the first k positions of the I1/I2 lists (fuzzy matching)")
    print(illegal.round(1).to_string())
    print("\ndistinct legal items in C / outside C, mean per list")
    print(per_list.round(2).to_string())
    figures = {}
    for m in illegal.index:
        figures |= {f"{m}_illegal_pct": float(illegal[m]),
                    f"{m}_plus_c_legal_in_c": float(per_list.loc[m, ("legal_in_c", "I1+C")]),
                    f"{m}_minus_c_legal_out_c": float(per_list.loc[m, ("legal_out_c", "I1-C")])}
    print(record.summary_line("legal_control", run=args.run, eval=eval_dir.name, **figures))


if __name__ == "__main__":
    main()
