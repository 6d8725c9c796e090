"""Did a regime change a model's test figures? One model of two runs, paired user by user.

    .venv/bin/python studies/compare_runs.py --run ml-100k-catalog --against ml-100k --model v2

Two runs that share stages 01-03's test prompts (the same seed and users, e.g. make run's
`params/ml-100k.yaml` and a side run such as `params/ml-100k-catalog.yaml`) ask their models the
same questions. This reads both runs' `06_eval/scores.parquet`, checks that every test group holds
the same users, and reports for `--model` the figure of each run and their difference with its 95 %
paired bootstrap interval (`recnb.evaluation.intervals.paired_deltas`: one set of user resamples per
group family, shared by both runs), then what the control sentence does in each run
(`control_effects`: with, without, Δ). Nothing is recomputed: the figures are stage 06's.
Ends with one line of `key=value` figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from recnb import artifacts as col
from recnb import record
from recnb.evaluation.intervals import CONTROL_FIGURES, control_effects, paired_deltas
from recnb.tasks import NOCONTROL

# (test group, figure) compared across runs: accuracy and the illegal items on I0, control on the rest
FIGURES = (("I0", "hr"), ("I0", "ndcg"), ("I0", "correct_count_pct"), ("I0", "repeat_item_pct"),
           ("I0", "non_exist_pct"), ("I0", "in_history_pct"),
           *((g, f) for group, f in CONTROL_FIGURES.items() for g in (group, group + NOCONTROL)),
           ("k11-15", "correct_count_pct"))
KEY_FIGURES = {"tcp_plus": ("I1+C", "tcp_pct"), "tcp_minus": ("I1-C", "tcp_pct"), "I0_hr": ("I0", "hr"),
               "I0_correct_count_pct": ("I0", "correct_count_pct")}  # in the key=value line


def joined(scores: dict[str, pd.DataFrame], model: str, matcher: str) -> pd.DataFrame:
    """One frame of `model`'s scores from each run (model renamed to the run's name).

    Raises:
        ValueError: a run lacks the model, or a test group does not hold the same users in every run.
    """
    parts = []
    for run, frame in scores.items():
        part = frame[(frame["model"] == model) & (frame["matcher"] == matcher)]
        if part.empty:
            raise ValueError(f"run {run!r} has no {matcher} scores for model {model!r}; its models: "
                             f"{sorted(frame['model'].unique())}")
        parts.append(part.assign(model=run))
    users = [p.groupby("test_group")[col.USER].apply(frozenset).to_dict() for p in parts]
    for group in sorted(set(users[0]) | set(users[1])):
        if users[0].get(group) != users[1].get(group):
            raise ValueError(f"test group {group!r} asks other users in {' and '.join(scores)}: pair only runs with the "
                             "same stages 01-03 (seed, test_max_users) and stage 06's max_test_users, shared_users and all_i0_users")
    return pd.concat(parts, ignore_index=True)


def compare(frame: pd.DataFrame, run: str, against: str, matcher: str, n_resamples: int = 1000,
            seed: int = 0) -> pd.DataFrame:
    """Per (group, figure) of FIGURES present: each run's figure and `run` − `against` with its interval."""
    present = set(frame["test_group"])
    wanted = [(group, figure) for group, figure in FIGURES if group in present]
    deltas = paired_deltas(frame, [(figure, (run, group), (against, group)) for group, figure in wanted], matcher,
                           n_resamples, seed)
    return pd.DataFrame([{"test_group": group, "figure": figure, run: d["a"], against: d["b"], "delta": d["delta"],
                          "delta_lo": d["lo"], "delta_hi": d["hi"]} for (group, figure), d in zip(wanted, deltas)])


def _load(outputs_dir: str, run: str) -> pd.DataFrame:
    path = Path(outputs_dir) / run / "06_eval" / col.SCORES_FILE
    if not path.exists():
        raise SystemExit(f"{path} not found: run stage 06 of {run!r} first (python -m recnb.run <its params file>)")
    return pd.read_parquet(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="ml-100k-catalog", help="a run under --outputs-dir with stage 06 finished")
    ap.add_argument("--against", default="ml-100k", help="the run it is compared with (the same test users)")
    ap.add_argument("--model", default="v2", help="a row name of both runs' stage 06 (e.g. v2, full)")
    ap.add_argument("--matcher", choices=("fuzzy", "exact"), default="fuzzy")
    ap.add_argument("--outputs-dir", default="outputs")
    args = ap.parse_args()
    if args.run == args.against:
        raise SystemExit(f"--run and --against are both {args.run!r}: name two runs")
    scores = {args.run: _load(args.outputs_dir, args.run), args.against: _load(args.outputs_dir, args.against)}
    try:
        frame = joined(scores, args.model, args.matcher)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    table = compare(frame, args.run, args.against, args.matcher)
    effects = control_effects(frame, [args.run, args.against], args.matcher)
    print(f"{args.model}, {args.matcher} matching: {args.run} against {args.against}, paired over the same users")
    print(table.round(3).to_string(index=False))
    print("\nthe control sentence in each run (with − without, paired interval):")
    print(effects.drop(columns=["matcher"]).round(1).to_string(index=False))
    figures = {(r["test_group"], r["figure"]): r for r in table.to_dict("records")}
    key = {}
    for short, at in KEY_FIGURES.items():
        if at in figures:
            r = figures[at]
            key |= {f"{short}_run": r[args.run], f"{short}_against": r[args.against], f"{short}_delta": r["delta"],
                    f"{short}_lo": r["delta_lo"], f"{short}_hi": r["delta_hi"]}
    for e in effects.itertuples(index=False):
        if e.test_group in ("I1+C", "I1-C"):
            side = "run" if e.model == args.run else "against"
            key[f"effect_{'plus' if e.test_group == 'I1+C' else 'minus'}_{side}"] = e.delta
    print(record.summary_line("compare_runs", run=args.run, against=args.against, model=args.model,
                              matcher=args.matcher, **key))


if __name__ == "__main__":
    main()
