"""SASRec on ml-100k under RecBole's protocol, against RecBole 1.2.1's SASRec on the same protocol.

Protocol: 5-core ml-100k, chronological leave-one-out, full ranking over all items, max_len 50,
hidden 64, 2 blocks, 2 heads, model selection on valid NDCG@10. Plain figures rank the test target
with the model's history (its last max_len items) masked, as the pipeline does; `_unmasked` ones
rank all items, as RecBole scores SASRec. Run once, niced:

    nice .venv/bin/python benchmarks/sasrec_ml100k.py [--threads 2]

Ends with one line: `sasrec ml-100k HR@10=... NDCG@10=... ... s_per_epoch=... train_s=... epochs=...`.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from recnb import data, record
from recnb.sasrec import SASRecConfig
from recnb.sasrec.evaluate import evaluate_all
from recnb.sasrec.train import build_sasrec, train_sasrec

# RecBole 1.2.1 SASRec on this protocol, 2-core machine (figures from issue 4)
RECBOLE = {"test_unmasked": {"hr@10": 0.1198, "ndcg@10": 0.0561}, "s_per_epoch": 138.0, "train_s": 970.0}
RECBOLE_POP_MASKED = {"hr@10": 0.0859, "ndcg@10": 0.0427}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: every core this process may use")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--window-stride", type=int, default=0)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    record.seed_everything(args.seed, args.threads)
    load_before = os.getloadavg()
    prepared = data.build_dataset("ml-100k", user_core=5, item_core=5, seed=args.seed)
    cfg = SASRecConfig(max_len=50, hidden=64, blocks=2, heads=2, dropout=args.dropout, lr=args.lr,
                       weight_decay=args.weight_decay, batch_size=args.batch_size, epochs=args.epochs,
                       patience=args.patience, window_stride=args.window_stride, seed=args.seed)
    model = build_sasrec(prepared.items, cfg)
    t0 = time.perf_counter()
    model, log = train_sasrec(model, prepared.splits, cfg)
    wall = time.perf_counter() - t0
    res = evaluate_all(model, prepared.splits)
    train_s, s_per_epoch = float(log["seconds"].sum()), float(log["seconds"].mean())
    table = pd.DataFrame({
        "ours": [res["test_unmasked"]["hr@10"], res["test_unmasked"]["ndcg@10"], res["test"]["hr@10"],
                 res["test"]["ndcg@10"], s_per_epoch, train_s],
        "RecBole 1.2.1": [RECBOLE["test_unmasked"]["hr@10"], RECBOLE["test_unmasked"]["ndcg@10"], None, None,
                          RECBOLE["s_per_epoch"], RECBOLE["train_s"]],
    }, index=["test HR@10 unmasked", "test NDCG@10 unmasked", "test HR@10 masked", "test NDCG@10 masked",
              "s per epoch", "train s"])
    print(f"ml-100k: {prepared.stats['users']} users, {prepared.stats['items']} items, "
          f"{prepared.stats['interactions']} interactions; {args.threads} torch threads")
    print(f"load average (1/5/15 min) before {load_before}, after {os.getloadavg()} on {os.cpu_count()} cores")
    print(f"{len(log)} epochs, best {int(log['valid_ndcg@10'].idxmax()) + 1}; wall incl. per-epoch valid eval {wall:.1f}s; "
          f"training CPU time {log['cpu_seconds'].sum():.1f}s ({log['cpu_seconds'].mean():.2f}s/epoch over all threads)")
    print(table.round(4).to_string())
    print("popularity (history masked as ours):", {k: round(v, 4) for k, v in res["pop_test"].items()},
          "| RecBole Pop (all train items masked):", RECBOLE_POP_MASKED)
    t = res["test"]
    print(record.summary_line(
        "sasrec_ml100k", threads=args.threads, HR_10=t["hr@10"], NDCG_10=t["ndcg@10"], HR_5=t["hr@5"],
        NDCG_5=t["ndcg@5"], HR_10_unmasked=res["test_unmasked"]["hr@10"],
        NDCG_10_unmasked=res["test_unmasked"]["ndcg@10"], s_per_epoch=s_per_epoch, train_s=train_s,
        epochs=len(log), recbole_s_per_epoch=RECBOLE["s_per_epoch"]))


if __name__ == "__main__":
    main()
