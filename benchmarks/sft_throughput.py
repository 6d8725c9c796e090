"""SFT training throughput: our set-up against a naive one, same data, model and optimizer steps.

- naive: stock trl `SFTTrainer`, batch 1 (accumulated to the same effective batch), random order,
  fp32, trl's own loss path (its tiled fused-LM-head kernel).
- ours-fp32: `recnb.sft` (batch `--batch`, each step a random draw cut into micro-batches of similar length, loss on answer tokens only).
- ours-bf16: the same under CPU bf16 autocast (the stage-04 default), where the CPU has AVX-512; elsewhere
  stage 04 trains fp32 and so does this row (`bf16_ran=False`) unless `RECNB_CPU_BF16=1` forces bf16.

Each configuration runs in its own process (so peak RSS is its own) for the same records
(the naive one, being slow, for its first `--naive-steps` steps only); tokens/s counts real (non-padding) tokens. The loss
columns compare the curves (same seed, same records): bf16 must track fp32.

    nice .venv/bin/python benchmarks/sft_throughput.py --model smollm2-135m --steps 4
    # the tiny batch's set-up; compare --batch 16 with --batch 4 (micro-batches cut by length):
    .venv/bin/python benchmarks/sft_throughput.py --model tiny-llama --finetune full --steps 60 \
        --records outputs/tiny/03_instructions/sft_train.jsonl --batch 4

Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("ours-bf16", "ours-fp32", "naive")


def fabricate_records(n: int, seed: int) -> list[dict]:
    """I0-style records with ml-100k-like titles (used when no stage-03 file is given)."""
    import random

    from recnb import prompts
    from recnb.answer import format_item_list

    rng = random.Random(seed)
    words = ["Star", "Night", "River", "Return", "Godfather", "Fargo", "Heat", "Twister", "Casino", "Alien"]
    title = lambda: f"{rng.choice(words)} {rng.choice(words)} ({rng.randint(1950, 1998)})"
    records = []
    for _ in range(n):
        history, k = [title() for _ in range(rng.randint(3, 10))], rng.randint(1, 10)
        text = prompts.TEMPLATES["I0"][0].format(history=prompts.quote_titles(history), item_count=k)
        records.append({"task": "I0", "completion": format_item_list([title() for _ in range(k)]),
                        "prompt": [{"role": "system", "content": prompts.SYSTEM_PROMPT},
                                   {"role": "user", "content": text.replace(prompts.SYSTEM_PROMPT + " ", "")}]})
    return records


def load_records(path: str, n: int, seed: int) -> list[dict]:
    """`n` records of a stage-03 SFT file (seeded subset), or fabricated ones when `path` is empty."""
    if not path:
        return fabricate_records(n, seed)
    from recnb import sft

    return sft.load_train_records(Path(path).parent, sft.SFTConfig(max_train_samples=n, seed=seed))


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Train one configuration for `args.steps` optimizer steps; returns its figures."""
    import torch
    from trl import SFTTrainer

    from recnb import record, sft

    record.seed_everything(0, args.threads)
    naive = name == "naive"
    steps = args.naive_steps if naive else args.steps
    records = load_records(args.records, steps * args.effective_batch, seed=0)
    settings = sft.SFTConfig(base_model=args.model, batch_size=1 if naive else args.batch,
                             effective_batch=args.effective_batch, max_steps=steps, bf16=name == "ours-bf16",
                             length_balanced=not naive, learning_rate=1e-3, warmup=0.0, logging_steps=1,
                             lora_dropout=args.lora_dropout, finetune=args.finetune)
    model, tok, wrapped = sft.load_trainable(settings)
    trainer = sft.build_trainer(model, tok, records, settings, Path("/tmp/sft_bench"), wrapped, progress=False)
    if naive:  # stock trl loss: undo our override for this instance only
        trainer.compute_loss = lambda *a, **kw: SFTTrainer.compute_loss(trainer, *a, **kw)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    log = sft.train_log(trainer)
    return {"config": name, "seconds": seconds, "tokens": int(trainer._total_train_tokens),
            "tokens_per_s": trainer._total_train_tokens / seconds, "threads": torch.get_num_threads(),
            "bf16": bool(trainer.args.bf16),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "losses": [round(v, 4) for v in log["loss"].tolist()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="base model (smollm2-135m, tiny-random, HF id)")
    ap.add_argument("--records", default="", help="a stage-03 sft_train.jsonl (default: fabricated I0 records)")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps of our configurations")
    ap.add_argument("--naive-steps", type=int, default=1,
                    help="optimizer steps of the naive one (its first ones run over the same records; it is slow)")
    ap.add_argument("--effective-batch", type=int, default=16, help="sequences per optimizer step")
    ap.add_argument("--batch", type=int, default=4, help="sequences per forward pass (ours)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: every core this process may use")
    ap.add_argument("--lora-dropout", type=float, default=0.0,
                    help="LoRA dropout of every configuration (0 as params/ml-100k.yaml; the paper: 0.05)")
    ap.add_argument("--finetune", choices=("lora", "full"), default="lora",
                    help="LoRA adapters (ml-100k) or every weight (params/tiny.yaml's tiny-llama)")
    ap.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    results = {}
    for name in CONFIGS:
        cmd = [sys.executable, __file__, "--one", name] + sys.argv[1:]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"# {name}: {results[name]}", flush=True)  # partial results survive a later failure
    print(f"{'config':<10} {'tokens/s':>9} {'seconds':>8} {'tokens':>7} {'peak RSS GiB':>12}  loss per step")
    for name, r in results.items():
        print(f"{name:<10} {r['tokens_per_s']:>9.0f} {r['seconds']:>8.1f} {r['tokens']:>7} {r['peak_rss_gib']:>12.2f}  {r['losses']}")
    naive, fp32, bf16 = results["naive"], results["ours-fp32"], results["ours-bf16"]
    loss_gap = max(abs(a - b) for a, b in zip(fp32["losses"], bf16["losses"]))  # same records, same order
    from recnb import record

    print(record.summary_line(
        "sft_throughput", model=args.model, threads=bf16["threads"], steps=args.steps,
        effective_batch=args.effective_batch, batch=args.batch, finetune=args.finetune,
        lora_dropout=args.lora_dropout, naive_tok_s=naive["tokens_per_s"],
        ours_fp32_tok_s=fp32["tokens_per_s"], ours_bf16_tok_s=bf16["tokens_per_s"],
        speedup_vs_naive=bf16["tokens_per_s"] / naive["tokens_per_s"],
        bf16_vs_fp32=bf16["tokens_per_s"] / fp32["tokens_per_s"], max_loss_gap_bf16=loss_gap,
        bf16_ran=bf16["bf16"],  # false on a CPU without AVX-512 (stage 04 trains fp32 there); RECNB_CPU_BF16=1 forces it
        peak_rss_gib=max(r["peak_rss_gib"] for r in results.values())))


if __name__ == "__main__":
    main()
