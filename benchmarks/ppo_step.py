"""Seconds per RL update of stage 05 (PPO or GRPO), split into generate / score / forward-backward, and peak RSS.

SmolLM2-135M-Instruct (the CPU default) with `--batch` prompts per update (16 in the issue), on
the RL prompts, catalog and teacher of a finished run (`outputs/ml-100k` if present, else
`outputs/tiny`: `--run`). The comparison: fp32 against bf16 autocast (each mode in its own
process, so peak RSS is per mode), PPO against critic-free GRPO (`--algorithms ppo,grpo`: the same
sampled answers per update, `batch / group_size` prompts answered `group_size` times), the scoring
share against its 5% budget, and how many updates a 15-minute stage buys. Run once, under `nice`,
on an idle machine:

    nice .venv/bin/python benchmarks/ppo_step.py --updates 2 --batch 16 --threads 2
    nice .venv/bin/python benchmarks/ppo_step.py --run tiny --base-model tiny-llama --modes fp32 --algorithms ppo,grpo
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import pandas as pd

from recnb import artifacts as col
from recnb import data, llm, paths, ppo, record, sasrec, tasks
from recnb.catalog import Catalog

SCORE_BUDGET = 0.05  # the issue: scoring must stay under 5% of an update
STAGE_BUDGET_S = 15 * 60  # ml-100k PPO stage budget in the pipeline


def pick_run(run: str | None) -> str:
    """The requested run, else ml-100k when its stage 03 finished, else tiny."""
    if run:
        return run
    ready = (paths.run_dir("outputs", "ml-100k") / "03_instructions" / "metrics.json").exists()
    return "ml-100k" if ready else "tiny"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="outputs/<run> with stages 01-03 (default: ml-100k, else tiny)")
    ap.add_argument("--base-model", default=llm.SMOLLM2)
    ap.add_argument("--updates", type=int, default=2, help="timed updates (after one warm-up update)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--ppo-epochs", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: every core this process may use")
    ap.add_argument("--warmup", type=int, default=1, help="untimed updates first (allocator and cache warm-up)")
    ap.add_argument("--modes", default="fp32,bf16", help="comma list of fp32, bf16 (bf16 autocast over fp32 weights)")
    ap.add_argument("--algorithms", default="ppo", help="comma list of ppo, grpo")
    ap.add_argument("--group-size", type=int, default=4, help="grpo: answers per prompt")
    args = ap.parse_args()
    modes, algorithms = args.modes.split(","), args.algorithms.split(",")
    for algorithm in algorithms:
        if algorithm not in ("ppo", "grpo"):
            raise SystemExit(f"--algorithms: unknown algorithm {algorithm!r}; use ppo and/or grpo")
    if len(modes) * len(algorithms) > 1:
        compare([(m, a) for a in algorithms for m in modes], sys.argv[1:])
        return
    measure(args, modes[0], algorithms[0])


def _without(argv: list[str], *options: str) -> list[str]:
    return [a for i, a in enumerate(argv) if a not in options and (i == 0 or argv[i - 1] not in options)]


def compare(variants: list[tuple[str, str]], argv: list[str]) -> None:
    """Run each (mode, algorithm) in a fresh process (own peak RSS) and print them side by side."""
    rest = _without(argv, "--modes", "--algorithms")
    lines = {}
    for mode, algorithm in variants:
        out = subprocess.run([sys.executable, __file__, *rest, "--modes", mode, "--algorithms", algorithm],
                             check=True, text=True, stdout=subprocess.PIPE).stdout
        print(out, end="", flush=True)
        lines[f"{algorithm}-{mode}"] = dict(kv.split("=", 1) for kv in out.strip().splitlines()[-1].split())
    table = pd.DataFrame(lines).T
    print(table[["s_per_update", "generate_s", "score_s", "train_s", "score_share", "peak_rss_mb",
                 "updates_in_15min"]].to_string())
    first = next(iter(lines))
    best = min(lines, key=lambda m: float(lines[m]["s_per_update"]))
    speedup = float(lines[first]["s_per_update"]) / float(lines[best]["s_per_update"])
    rss = float(lines[best]["peak_rss_mb"]) / float(lines[first]["peak_rss_mb"])
    best_line = {k: v for k, v in lines[best].items() if k != "name"}
    print(record.summary_line("ppo_step", **best_line, best=best, **{f"speedup_vs_{first}": speedup,
                                                                     f"peak_rss_ratio_vs_{first}": rss}))


def measure(args: argparse.Namespace, mode: str, algorithm: str = "ppo") -> None:
    """Time `args.updates` updates of one algorithm in one precision mode and print its report."""
    if mode not in ("fp32", "bf16"):
        raise SystemExit(f"--modes: unknown mode {mode!r}; use fp32 and/or bf16")
    run = pick_run(args.run)
    n_threads = record.seed_everything(0, args.threads)
    items = data.load_prepared(paths.input_dir("outputs", run, "01_data_duckdb")).items
    teacher = sasrec.load_sasrec(paths.input_dir("outputs", run, "02_sasrec") / col.SASREC_FILE)
    scorer = ppo.RecScorer(Catalog(items), teacher)
    prompts = ppo.rl_records(tasks.read_records(paths.input_dir("outputs", run, "03_instructions") / col.RL_PROMPTS_FILE))
    model, tokenizer = llm.load_base(args.base_model, device="cpu")
    grpo = algorithm == "grpo"
    ac = ppo.ActorCritic(model, lora_r=4, lora_alpha=2, seed=0, bf16=mode == "bf16", critic=not grpo)
    grpo_only = {"group_size": args.group_size, "kl_coef": 0.0} if grpo else {}  # grpo: the KL in the loss
    cfg = ppo.PPOConfig(batch_size=args.batch, minibatch_size=args.minibatch, ppo_epochs=args.ppo_epochs,
                        max_new_tokens=args.max_new_tokens, lr=5e-6, critic_lr=5e-6, algorithm=algorithm, **grpo_only)
    opt = ppo.make_optimizer(ac, cfg)
    rows = []
    for update in range(args.warmup + args.updates):
        t0 = time.perf_counter()
        if grpo:  # the same sampled answers per update: batch / group_size prompts, group_size times each
            records = ppo.batch_records(prompts, cfg.batch_size // cfg.group_size, cfg.seed, update)
            row = ppo.grpo_update(ac, opt, tokenizer, records, scorer, cfg)
        else:
            records = ppo.batch_records(prompts, cfg.batch_size, cfg.seed, update)
            row = ppo.ppo_update(ac, opt, tokenizer, records, scorer, cfg)
        row["t_total"] = time.perf_counter() - t0
        if update >= args.warmup:
            rows.append(row)
        print(f"{algorithm}-{mode} update {update}: {row['t_total']:.1f}s (generate {row['t_generate']:.1f}, score {row['t_score']:.2f}, "
              f"train {row['t_train']:.1f}); {row['response_len']:.0f} answer tokens", flush=True)
    report(pd.DataFrame(rows), run, n_threads, args, mode, algorithm)


def report(log: pd.DataFrame, run: str, n_threads: int, args: argparse.Namespace, mode: str,
           algorithm: str = "ppo") -> None:
    """Print the per-phase table, the budget comparison and the one key=value line."""
    mean = log[["t_generate", "t_score", "t_train", "t_total"]].mean()
    share = mean / mean["t_total"]
    print(pd.DataFrame({"s/update": mean.round(2), "share": share.round(3)}).to_string())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    fits = int(STAGE_BUDGET_S // mean["t_total"])
    verdict = "within" if share["t_score"] <= SCORE_BUDGET else "OVER"
    print(f"scoring {share['t_score']:.1%} of an update: {verdict} the {SCORE_BUDGET:.0%} budget")
    print(f"a {STAGE_BUDGET_S // 60}-minute PPO stage buys {fits} updates = {fits * args.batch} sampled answers")
    print(record.summary_line(
        "ppo_step", mode=mode, algorithm=algorithm, run=run, model=args.base_model, batch=args.batch, threads=n_threads,
        cores=len(os.sched_getaffinity(0)), s_per_update=mean["t_total"], generate_s=mean["t_generate"],
        score_s=mean["t_score"], train_s=mean["t_train"], score_share=share["t_score"],
        answer_tokens=log["response_len"].mean(), peak_rss_mb=round(peak_mb), updates_in_15min=fits))


if __name__ == "__main__":
    main()
