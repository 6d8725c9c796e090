"""Issue 19's targets on the tiny batch, seed by seed: which hold on every seed, and by how much.

    .venv/bin/python studies/tiny_seeds.py --seeds 0 1 2 --outputs-dir /tmp/seeds
    .venv/bin/python studies/tiny_seeds.py --seeds 0 1 2 3 4 --jobs 2 --outputs-dir /tmp/seeds   # 2 cores

The tiny batch is a miniature trained to convergence in minutes, and its outcome moves with the
seed (the synthetic world, the initial weights and the batch order all follow `common.seed`): a
target met on one seed says little. For each seed this writes `params/tiny.yaml` (or `--params`, a
variant of it) with that seed to
`<outputs-dir>/tiny-s<seed>.yaml` (the study's own file: rewritten on every call; `--set
05_ppo.lam=1.0` changes a parameter there, as `recnb.run --set` does), runs the batch
with `--outputs-dir <outputs-dir>/s<seed>/outputs` (its figures beside it, one seed after another,
1 thread as in CI; the runner skips what is up to date and reruns what is stale, so a finished seed
costs nothing), then checks that every stage is up to date and reads stages 04-06, one row per seed:

- v2's I0 CorrectCount, NonExist and HR@10 (stage 06, fuzzy matching, the test users), and the
  category AUC of the untuned and the tuned model (stage 04's probe);
- TCP(+C) of v2 against the untuned base, against v1 and against its no-control twin, and TCP(−C)
  against the twin, with the paired 95 % interval of each effect of the sentence;
- the illegal items on I0 (Repeat + NonExist + InHistory) of full (PPO) and of v2, the paired 95 %
  interval of full − v2 (`rl_lo`, `rl_hi`: stage 06's `start_effects.csv`), PPO's sampled list
  reward over the first and the last quarter of its updates (other prompts each update: shown, not
  judged), and the paired gain of its last actor over the SFT start on the valid prompts, with its
  95 % interval (`gain`, `gain_lo`, `gain_hi`: stage 05's `reward_check`; a run without one misses
  both reward targets);
- the batch's time: the stages' own seconds, summed (`stage_seconds`, so runner start-up aside).

Then, per target, on how many seeds it holds, and each paired effect's mean over the seeds with a 95 %
percentile-bootstrap interval over the seeds (`over_seeds`): an effect below one seed's noise can
still be told from zero across them. `--no-run` only reads runs, and stops on one that is
missing or stale (it cannot tell whether they ran alone: it counts their times). `--jobs 2` runs two
seeds at a time (each on its own thread, as in CI: the five seeds in ~40 min instead of ~65 on 2
cores), each seed's output then going to `<outputs-dir>/s<seed>/run.log`; the figures are those of
one seed at a time (same seed, same params, same metrics), but not the times, so the time target
then reads `n/a`. A relative `--outputs-dir` is taken from the repository root, as the runner does.
Writes the table to `<outputs-dir>/tiny_seeds.csv`, each effect seed by seed beside its mean over the seeds
to `tiny_seeds.png` / `.pdf` (a forest plot), and ends with one key=value line.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from recnb import paths, record
from recnb.bootstrap import mean_interval
from recnb.metrics import ILLEGAL
from recnb.report import plots
from recnb.run import Job, ParamsError, apply_overrides, load_jobs, stage_state

PARAMS = paths.REPO_ROOT / "params" / "tiny.yaml"

# issue 19's targets: (column, description, test on a seed's row)
TARGETS = (
    ("cc", "v2 I0 CorrectCount >= 80 %", lambda r: r["v2_cc"] >= 80),
    ("nonexist", "v2 I0 NonExist <= 20 %", lambda r: r["v2_nonexist"] <= 20),
    ("hr", "v2 I0 HR@10 > 0", lambda r: r["v2_hr"] > 0),
    ("plus_base", "v2 TCP(+C) >= base + 20", lambda r: r["v2_plus"] >= r["base_plus"] + 20),
    ("plus_twin", "v2 TCP(+C) >= twin + 10", lambda r: r["plus_delta"] >= 10),
    ("minus_twin", "v2 TCP(-C) <= twin - 10", lambda r: r["minus_delta"] <= -10),
    ("plus_v1", "v2 TCP(+C) > v1", lambda r: r["v2_plus"] > r["v1_plus"]),
    ("rl_illegal", "full illegal <= v2 illegal", lambda r: r["full_illegal"] <= r["v2_illegal"]),
    # stage 05's reward_check: the last actor against the SFT start on the valid prompts, paired (not the
    # training batches' first and last quarters, whose prompts differ)
    ("rl_reward", "PPO sampled reward rises (paired)", lambda r: r["gain"] > 0),
    ("rl_reward_sure", "... beyond noise (95 %)", lambda r: r["gain_lo"] > 0),
    ("time", "batch <= 600 s", lambda r: r["seconds"] <= 600),
)

# the paired effects of one seed, averaged over the seeds by `over_seeds` and drawn by `plots.seed_effects`:
# (column, its 95 % interval's columns, what it is, the figure's axis label, the target's threshold or None)
EFFECTS = (
    ("plus_delta", "plus_lo", "plus_hi", "v2 TCP(+C) - its no-control twin, points",
     "v2 TCP(+C) −\nno-control twin (pts)", 10.0),
    ("minus_delta", "minus_lo", "minus_hi", "v2 TCP(-C) - its no-control twin, points",
     "v2 TCP(−C) −\nno-control twin (pts)", -10.0),
    ("rl_illegal", "rl_lo", "rl_hi", "full - v2 illegal I0 items, points", "full − v2, illegal\nitems on I0 (pts)", None),
    ("gain", "gain_lo", "gain_hi", "PPO's sampled reward, last actor - SFT start",
     "PPO's sampled reward,\nlast actor − SFT start", None),
)

# the key=value line names the per-seed lists of two effects otherwise; their means pair with them
SUMMARY_KEYS = {"rl_illegal": "illegal_full_minus_v2", "gain": "reward_gain"}


def seed_config(seed: int, outputs_dir: Path, params: Path = PARAMS, overrides: Sequence[str] = ()) -> dict:
    """`params` (the tiny batch's file, or a variant of it) with the `--set` overrides and `common.seed`
    applied (`recnb.run.apply_overrides`), checked as the runner checks a file; nothing is written."""
    cfg = yaml.safe_load(params.read_text())
    if not isinstance(cfg, dict) or not isinstance(cfg.get("common"), dict):
        raise SystemExit(f"{params}: not a params file with a 'common:' section (see params/tiny.yaml)")
    every = [*overrides, f"common.seed={seed}"]
    try:
        load_jobs(params, outputs_dir=str(seed_outputs(outputs_dir, seed)), overrides=every)  # every value
        return apply_overrides(cfg, every, str(params), with_paper=False)
    except ParamsError as err:
        raise SystemExit(f"error: {err}") from None


def seed_params(seed: int, outputs_dir: Path, params: Path = PARAMS, overrides: Sequence[str] = ()) -> Path:
    """`seed_config`, written beside the runs as `tiny-s<seed>.yaml`."""
    return write_seed_params(seed, outputs_dir, seed_config(seed, outputs_dir, params, overrides))


def write_seed_params(seed: int, outputs_dir: Path, cfg: dict) -> Path:
    """A seed's checked config (`seed_config`) as `<outputs_dir>/tiny-s<seed>.yaml`."""
    out = outputs_dir / f"tiny-s{seed}.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def seed_outputs(outputs_dir: Path, seed: int) -> Path:
    """The `--outputs-dir` of one seed's run: its own root, so its `paper_figures/` are its own."""
    return outputs_dir / f"s{seed}" / "outputs"


def seed_command(params_file: Path, root: Path) -> list[str]:
    """The runner's command line for one seed's batch (stale stages rerun, finished ones are skipped)."""
    return [sys.executable, "-m", "recnb.run", str(params_file), "--outputs-dir", str(root), "--force"]


def run_seeds(params_files: dict[int, Path], out: Path, jobs: int = 1) -> None:
    """Run each seed's batch, `jobs` at a time; stop naming the seed (and its log) whose batch failed.

    One at a time, a seed's output goes to the terminal; several at a time, each to
    `<out>/s<seed>/run.log`, with one line per seed as it starts and ends.
    """
    waiting, running, failed = list(params_files.items()), {}, []
    while waiting or running:
        while waiting and len(running) < jobs:
            seed, params_file = waiting.pop(0)
            root = seed_outputs(out, seed)
            cmd = seed_command(params_file, root)
            log = None  # one at a time: the terminal
            if jobs > 1:
                root.parent.mkdir(parents=True, exist_ok=True)
                log = (root.parent / "run.log").open("w")
            print(f"seed {seed}: {' '.join(cmd[1:])}" + (f" > {log.name}" if log else ""), flush=True)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT if log else None)
            running[seed] = (proc, log, time.monotonic())
        time.sleep(0.2)
        for seed, (proc, log, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[seed]
            where = "see the output above" if log is None else f"see {log.name}"
            if log is not None:
                log.close()
                print(f"seed {seed}: finished (exit {proc.returncode}) after {time.monotonic() - start:.0f} s", flush=True)
            if proc.returncode != 0:
                failed.append(f"seed {seed}: the tiny batch failed (exit {proc.returncode}); {where}")
                waiting = []  # start nothing more; let the running seeds finish
    if failed:
        raise SystemExit("; ".join(failed))


def check_finished(run_dir: Path, jobs: list[Job]) -> None:
    """Stop, naming the stage and why, unless every stage of the batch is up to date."""
    for job in jobs:
        state, why = stage_state(run_dir / job.name, job.params)
        if state != "done":
            raise SystemExit(f"{run_dir / job.name}: {why}; run the study without --no-run to (re)run it")
    if not (run_dir / "06_eval" / "control_effects.csv").exists():
        raise SystemExit(f"{run_dir / '06_eval'}: no control_effects.csv; rerun stage 06 (--only 06_eval --force)")


def seed_row(seed: int, run_dir: Path, jobs: list[Job]) -> dict:
    """One seed's figures, read from its finished stages 04-06 (`check_finished` first)."""
    def fig(model: str, group: str, figure: str) -> float:
        row = summary[(summary["model"] == model) & (summary["test_group"] == group)]
        if len(row) != 1:
            raise SystemExit(f"{run_dir / '06_eval/summary.csv'}: no single fuzzy row for {model} {group}; "
                             "did stage 06 run with the tiny batch's models?")
        return float(row.iloc[0][figure])

    def effect(group: str) -> pd.Series:
        if ("v2", group) not in effects.index:
            raise SystemExit(f"{run_dir / '06_eval/control_effects.csv'}: no fuzzy TCP row for v2 {group}")
        return effects.loc[("v2", group)]

    def illegal(model: str) -> float:
        return sum(fig(model, "I0", f) for f in ILLEGAL)

    summary = pd.read_csv(run_dir / "06_eval" / "summary.csv")
    summary = summary[summary["matcher"] == "fuzzy"]
    effects = pd.read_csv(run_dir / "06_eval" / "control_effects.csv")
    effects = effects[(effects["matcher"] == "fuzzy") & (effects["figure"] == "tcp_pct")].set_index(["model", "test_group"])
    ppo = record.read_json(run_dir / "05_ppo" / "metrics.json")
    auc = record.read_json(run_dir / "04_sft_unsloth" / "metrics.json")["category_auc"]
    seconds = sum(record.read_json(run_dir / job.name / "metrics.json")["stage_seconds"] for job in jobs)
    plus, minus = effect("I1+C"), effect("I1-C")
    v2_illegal, full_illegal = illegal("v2"), illegal("full")
    rl = rl_interval(run_dir)
    return {
        "seed": seed, "seconds": round(seconds), "v2_cc": fig("v2", "I0", "correct_count_pct"),
        "v2_nonexist": fig("v2", "I0", "non_exist_pct"), "v2_hr": fig("v2", "I0", "hr"),
        "auc_base": auc["base"], "auc_sft": auc["sft"],
        "base_plus": fig("base", "I1+C", "tcp_pct"), "v1_plus": fig("v1", "I1+C", "tcp_pct"),
        "v2_plus": plus["with"], "plus_delta": plus["delta"], "plus_lo": plus["delta_lo"], "plus_hi": plus["delta_hi"],
        "v2_minus": minus["with"], "minus_delta": minus["delta"], "minus_lo": minus["delta_lo"],
        "minus_hi": minus["delta_hi"], "v2_illegal": v2_illegal, "full_illegal": full_illegal,
        "rl_illegal": full_illegal - v2_illegal,
        "rl_lo": rl[0], "rl_hi": rl[1], "best_update": ppo["best_update"], "reward_first": ppo["train_first_quarter"]["list_reward"],
        "reward_last": ppo["train_last_quarter"]["list_reward"],
        **{name: ppo.get("reward_gain", {}).get(key, math.nan)
           for name, key in (("gain", "delta"), ("gain_lo", "lo"), ("gain_hi", "hi"))},
    }


def rl_interval(run_dir: Path) -> tuple[float, float]:
    """full − v2 on I0 illegal items: stage 06's paired 95 % interval (`start_effects.csv`; NaN where absent)."""
    path = run_dir / "06_eval" / "start_effects.csv"
    if not path.exists():
        return math.nan, math.nan
    e = pd.read_csv(path)
    e = e[(e["model"] == "full") & (e["start"] == "v2") & (e["figure"] == "illegal_item_pct") & (e["matcher"] == "fuzzy")]
    return (float(e.iloc[0]["delta_lo"]), float(e.iloc[0]["delta_hi"])) if len(e) == 1 else (math.nan, math.nan)


def held(table: pd.DataFrame, jobs: int = 1) -> pd.DataFrame:
    """Per target: on how many of the seeds it holds, and which seeds miss it; the time target reads
    `n/a` where the seeds ran `jobs` > 1 at a time (each batch's seconds then include waiting for a core)."""
    rows = []
    for name, text, test in TARGETS:
        if name == "time" and jobs > 1:
            rows.append({"target": name, "wants": text, "held": "n/a", "missed_on": f"ran {jobs} seeds at a time"})
            continue
        ok = table.apply(test, axis=1)
        rows.append({"target": name, "wants": text, "held": f"{int(ok.sum())}/{len(table)}",
                     "missed_on": " ".join(str(s) for s in table.loc[~ok, "seed"]) or "-"})
    return pd.DataFrame(rows)


def over_seeds(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Each paired effect (`EFFECTS`) averaged over the seeds, with its 95 % percentile-bootstrap interval
    over the seeds (the seeds are the units resampled; with few seeds the interval runs a little narrow),
    and on how many seeds it is above and below zero. A seed without the effect (NaN) is left out; with
    a single seed there is no interval (`mean_interval`)."""
    rows = []
    for column, _, _, text, _, _ in EFFECTS:
        values = table[column].dropna().to_numpy()
        mean, lo, hi = mean_interval(values, seed=seed, name=f"over_seeds/{column}")
        rows.append({"effect": column, "is": text, "seeds": len(values), "mean": mean, "lo": lo, "hi": hi,
                     "above_0": int((values > 0).sum()), "below_0": int((values < 0).sum())})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--outputs-dir", default="outputs/studies/tiny_seeds", help="runs go to <dir>/s<seed>/outputs/")
    ap.add_argument("--no-run", action="store_true", help="only read runs that have finished and are up to date")
    ap.add_argument("--params", type=Path, default=PARAMS,
                    help="the batch to run per seed: params/tiny.yaml or a variant of it (its common.seed is replaced)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                    help="override a parameter of --params in every seed's file, as `recnb.run --set` does "
                         "(e.g. 05_ppo.lam=1.0; repeatable). Stale stages rerun in place: give a variant its "
                         "own --outputs-dir (a copy of finished runs, to rerun only what the change touches)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="seeds run at a time (1 thread each); > 1: each seed's output goes to <dir>/s<seed>/run.log")
    args = ap.parse_args()
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if not args.params.is_file():
        ap.error(f"--params {args.params}: no such file")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        ap.error(f"--seeds must be distinct and >= 0, got {args.seeds}")
    out = paths.REPO_ROOT / args.outputs_dir  # an absolute path stays as it is
    # a bad value stops here, before anything is written
    configs = {seed: seed_config(seed, out, args.params, args.overrides) for seed in args.seeds}
    out.mkdir(parents=True, exist_ok=True)
    params_files = {seed: write_seed_params(seed, out, cfg) for seed, cfg in configs.items()}
    at_once = 1 if args.no_run else args.jobs  # --no-run reads runs as they were recorded
    if not args.no_run:
        run_seeds(params_files, out, at_once)
    rows = []
    for seed, params_file in params_files.items():
        root = seed_outputs(out, seed)
        run, jobs = load_jobs(params_file, outputs_dir=str(root))
        run_dir = paths.run_dir(root, run)
        check_finished(run_dir, jobs)
        rows.append(seed_row(seed, run_dir, jobs))
    table = pd.DataFrame(rows)
    table.to_csv(out / "tiny_seeds.csv", index=False)
    targets = held(table, at_once)
    means = over_seeds(table)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 2):
        print(table.to_string(index=False))
        print(targets.to_string(index=False))
    with pd.option_context("display.width", 200, "display.precision", 3):
        print("\nOver the seeds (mean, 95 % percentile bootstrap with the seeds resampled; a little narrow with few seeds):")
        print(means.to_string(index=False))
    plots.set_style()  # after the tables: what was printed stands even if the figure fails
    files = plots.save(plots.seed_effects(table, means.set_index("effect"), EFFECTS), out, "tiny_seeds")
    print(f"figure: {files[0]} (.pdf beside it)")
    print(record.summary_line(
        "tiny_seeds", params=args.params.name, **({"set": ";".join(args.overrides)} if args.overrides else {}),
        seeds="-".join(map(str, args.seeds)),
        jobs=at_once, **{f"held_{r.target}": r.held for r in targets.itertuples()},
        minus_delta="/".join(f"{d:+.1f}" for d in table["minus_delta"]),
        illegal_full_minus_v2="/".join(f"{d:+.1f}" for d in table["rl_illegal"]),
        reward_gain="/".join(f"{d:+.3f}" for d in table["gain"]),
        **{f"mean_{SUMMARY_KEYS.get(r.effect, r.effect)}": f"{r.mean:+.3g}[{r.lo:+.3g},{r.hi:+.3g}]"
           for r in means.itertuples()}))


if __name__ == "__main__":
    main()
