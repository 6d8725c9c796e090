"""Benchmark: where one greedy decoding step goes, with transformers' default KV cache and with ours.

The step stage 06 repeats ~150 times per batch: a bf16 model, a batch of left-padded prompts (the
first rows padded, as in a length-sorted batch), the prompt prefilled, then `--steps` one-token
forward passes under `torch.profiler`, once with `DynamicCache` (each step concatenates, i.e.
copies, every layer's whole cache) and once with `llm.answer_cache` (each step writes its position
in place). Prints the top operators of each and their shares of the profiled time; then the same
steps timed without the profiler, alternating the two caches `--repeats` times, and whether the two
caches gave the same logits bit for bit. Random prompt tokens: the cost of a step does not depend on
which tokens they are. Run on an idle machine:

    nice .venv/bin/python benchmarks/decode_profile.py --batch 64 --prompt 250 --threads 2

Ends with one `key=value` line.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from recnb import llm, record

# "cat" is the default cache's concatenation (and, a little, the loop's growing attention mask)
GROUPS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm"), "cat": ("aten::cat",),
          "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math")}


def prefill(model, ids: torch.Tensor, mask: torch.Tensor, cache_kwargs: dict) -> torch.Tensor:
    """Run the prompts into the cache; the first greedy token of each row."""
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1, **cache_kwargs)
    return out.logits[:, -1:].argmax(-1)


def steps(model, nxt: torch.Tensor, mask: torch.Tensor, n: int, cache_kwargs: dict) -> tuple[torch.Tensor, float]:
    """`n` greedy one-token steps after `prefill`; (stacked logits, seconds)."""
    logits = []
    start = time.perf_counter()
    for _ in range(n):
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        out = model(input_ids=nxt, attention_mask=mask, use_cache=True, logits_to_keep=1, **cache_kwargs)
        nxt = out.logits[:, -1:].argmax(-1)
        logits.append(out.logits[:, -1])
    return torch.stack(logits), time.perf_counter() - start


def shares(prof) -> dict[str, float]:
    """% of the profiled self CPU time per operator group (and the rest)."""
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    out = {g: 100 * sum(e.self_cpu_time_total for e in events if e.key in names) / total for g, names in GROUPS.items()}
    out["other"] = 100 - sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=llm.SMOLLM2, help="base model name")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=250, help="prompt tokens (the first eighth of the rows padded by 30)")
    ap.add_argument("--steps", type=int, default=30, help="timed decoding steps after the prefill")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per cache, alternating")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = llm.load_base(args.model)
    model = llm.cast(model, torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size - 100, (args.batch, args.prompt), generator=gen)
    mask = torch.ones_like(ids)
    mask[: max(1, args.batch // 8), :30] = 0
    key = llm.cache_keyword(model)
    caches = {"default": lambda: {key: llm.DynamicCache()}, "inplace": lambda: llm.answer_cache(model, args.steps + 1)}
    found: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for name, make in caches.items():
            kw = make()
            steps(model, prefill(model, ids, mask, kw), mask, 2, kw)  # warm up these shapes
            kw = make()
            first = prefill(model, ids, mask, kw)
            with profile(activities=[ProfilerActivity.CPU]) as prof:  # the steps only, not the prefill
                steps(model, first, mask, args.profile_steps, kw)
            found[name] = shares(prof)
            print(f"--- {name} cache: {args.profile_steps} steps after a {args.batch} x {args.prompt} prefill")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
        times: dict[str, list[float]] = {name: [] for name in caches}
        logits = {}
        for _ in range(args.repeats):
            for name, make in caches.items():
                kw = make()
                logits[name], seconds = steps(model, prefill(model, ids, mask, kw), mask, args.steps, kw)
                times[name].append(1000 * seconds / args.steps)
    step = {name: statistics.median(t) for name, t in times.items()}
    for name in caches:
        print(f"{name:>8}: {step[name]:.1f} ms a step (runs: {', '.join(f'{t:.1f}' for t in times[name])}); "
              + ", ".join(f"{g} {p:.1f} %" for g, p in found[name].items()))
    print(record.summary_line(
        "decode_profile", model=args.model, batch=args.batch, prompt=args.prompt, steps=args.steps,
        threads=args.threads, step_ms_default=step["default"], step_ms_inplace=step["inplace"],
        inplace_speedup=step["default"] / step["inplace"], identical_logits=int(torch.equal(*logits.values())),
        **{f"{g}_pct_default": p for g, p in found["default"].items()},
        **{f"{g}_pct_inplace": p for g, p in found["inplace"].items()}))


if __name__ == "__main__":
    main()
