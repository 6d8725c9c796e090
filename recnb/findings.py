""""What this shows": the closing sentences of notebooks 01-05 and 07, built from what each records.

Each function reads the stage's own `metrics.json` content (a plain dict, so the core imports no
stage) and returns markdown: the figures that matter, read the way the paper frames them. A notebook
ends with `display(Markdown(findings.<stage>(metrics)))`, so its conclusion changes with its numbers.
Stage 06's, which needs the scores and intervals, is `recnb.evaluation.findings.eval_findings`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

HEAD = "**What this shows**"


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f} %"


def data(stats: Mapping[str, Any]) -> str:
    """Stage 01: what survived the k-core filter and how dense the data is."""
    kept = stats["interactions"] / max(stats.get("interactions_before_filter", stats["interactions"]), 1)
    return "\n".join([
        (f"{HEAD}: {stats['dataset']} keeps {stats['users']:,} users, {stats['items']:,} items and "
        f"{stats['interactions']:,} interactions ({100 * kept:.0f} % of the raw ones) after the "
        f"{stats.get('user_core')}/{stats.get('item_core')}-core filter in {stats.get('k_core_rounds')} round(s)."),
        (f"A user has {stats['avg_seq_len']:.1f} interactions on average and the matrix is "
        f"{100 * stats['sparsity']:.2f} % empty; {stats['categories']} categories label the items (the intentions' C)."),
        "Each user's last item is the test target, the one before it the validation target."])


def teacher(metrics: Mapping[str, Any]) -> str:
    """Stage 02: the teacher against the popularity floor, full ranking with the history masked."""
    test, pop = metrics["test"], metrics.get("pop_test", {})
    lift = test["hr@10"] / pop["hr@10"] if pop.get("hr@10") else math.nan
    verdict = ("a teacher worth distilling" if lift >= 1.5 else
               "barely above popularity: its labels teach little" if lift >= 1 else "below popularity: retrain it")
    return "\n".join([
        (f"{HEAD}: SASRec ranks the held-out test item in its top 10 for {100 * test['hr@10']:.1f} % of users "
        f"(NDCG@10 {test['ndcg@10']:.3f}), against {100 * pop.get('hr@10', math.nan):.1f} % for the most popular "
        f"items: {lift:.1f}× the floor, {verdict}."),
        (f"Early stopping kept epoch {metrics['best_epoch']} of {metrics['epochs']} ({metrics['train_s']:.0f} s); "
        "its top-N rankings label stage 03's SFT data and score stage 05's answers.")])


def instructions(metrics: Mapping[str, Any]) -> str:
    """Stage 03: how many records each file got, what was skipped and whether every label obeys its intention."""
    rows = metrics["rows"]
    table7 = {k: v for k, v in metrics.get("table7", {}).items() if k != "ALL" and v}
    labels = ("every SFT label obeys its intention" if metrics["label_problems"] == 0 else
              f"{metrics['label_problems']} SFT labels break their intention: fix before training")
    lists = metrics.get("catalog_lists", 0)
    minus = metrics.get("catalog_minus_lists", 0)
    kinds = f"{lists - minus:,} I1+C, {minus:,} I1-C" if minus else "I1+C"
    extra = f" plus {lists:,} catalog lists ({kinds}, not in the paper)" if lists else ""
    return "\n".join([
        (f"{HEAD}: {rows['sft_train'] - lists:,} SFT records over {len(table7)} tasks "
        f"({', '.join(f'{k} {v}' for k, v in table7.items())}){extra}, {rows['rl_prompts']:,} RL prompts, "
        f"{rows['sft_valid']} validation and {rows['test_prompts']:,} test prompts; {labels}."),
        (f"{metrics['skipped_total']} samples were skipped where no label fits the intention (counted in stats.json). "
        f"Prompts run to {metrics['prompt_tokens_max']} tokens (median {metrics['prompt_tokens_p50']:.0f}); "
        f"{metrics['prompts_over_max']} exceed the prompt budget.")])


def sft(metrics: Mapping[str, Any]) -> str:
    """Stage 04: the untuned base against the tuned model on the same valid prompts, and the category probe."""
    head = metrics["headline"]
    base, tuned = head.get("base", {}), head["sft"]
    train = metrics["train"]
    lines = [(f"{HEAD}: {train['steps']} optimizer steps ({train['epochs']:.2f} epochs, {train['seconds']:.0f} s) took "
             f"the loss from {train['first_loss']:.2f} to {train['final_loss']:.2f}. On the same valid prompts, "
             "untuned → tuned:")]
    for key, name, better in (("correct_count_pct", "lists with exactly k items", "up"),
                              ("non_exist_pct", "invented titles (% of items)", "down"),
                              ("repeat_item_pct", "repeated titles (% of items)", "down"),
                              ("tcp_pct", "TCP over the control prompts", "—")):
        lines.append(f"- {name}: {_pct(base.get(key))} → {_pct(tuned.get(key))}"
                     + ("" if better == "—" else f" (want {better})"))
    auc = metrics.get("category_auc") or {}
    if "sft" in auc and auc["sft"] is not None:
        probe = metrics["category_probe"]["sft"]
        known = ("it tells C from the rest" if auc["sft"] >= 0.7 else
                 "barely above chance: TCP cannot rise far from here" if auc["sft"] >= 0.55 else "chance: it does not")
        lines.append(f"- category probe (P(an in-C title outscores an out-of-C one) under \"more C\"): "
                     f"{auc.get('base', math.nan):.2f} → {auc['sft']:.2f} ± {probe['category_auc_se']:.2f} "
                     f"over {probe['users']} users: {known}.")
    return "\n".join(lines)


def rl(summary: Mapping[str, Any], algorithm: str = "ppo") -> str:
    """Stage 05: the sampled reward's paired gain on the validation prompts (with `reward_gain`), the
    training batches' reward trend, and greedy validation at the SFT start, the kept actor and the end."""
    start, best, last = summary["valid_start"], summary["valid_best"], summary["valid_last"]
    first, late = summary["train_first_quarter"], summary["train_last_quarter"]
    trend = late["list_reward"] - first["list_reward"]
    kept = ("the SFT model: no update beat it" if summary["best_update"] == 0
            else f"update {summary['best_update']}")
    lines = [f"{HEAD}: {summary['updates']} {algorithm.upper()} updates."]
    gain = summary.get("reward_gain")
    if gain:
        verdict = ("up beyond noise" if gain["lo"] > 0 else "down beyond noise" if gain["hi"] < 0
                   else "within noise")
        lines.append(
            f"Did RL raise its reward? On the {gain['prompts']} validation prompts, {gain['samples']} sampled answer(s) "
            f"each from one seed, the list reward went from {gain['start']:.3f} (SFT start) to {gain['last']:.3f} "
            f"(last actor): {gain['delta']:+.3f} [{gain['lo']:+.3f}, {gain['hi']:+.3f}] paired over prompts, "
            f"{verdict}; illegal items {_pct(gain['start_illegal_pct'])} → {_pct(gain['last_illegal_pct'])}.")
    lines += [
        (f"The training batches' sampled list reward went from {first['list_reward']:.3f} (first quarter) to "
         f"{late['list_reward']:.3f} (last quarter), {'up' if trend > 0 else 'down'} {abs(trend):.3f}"
         + (" (other prompts at each update: it also follows which were drawn)" if gain else "")
         + f"; illegal items {_pct(first.get('illegal_pct'))} → {_pct(late.get('illegal_pct'))}."),
        (f"Greedy validation, SFT start → kept actor ({kept}) → last: list reward {start['val_list_reward']:.3f} → "
         f"{best['val_list_reward']:.3f} → {last['val_list_reward']:.3f}; illegal items "
         f"{_pct(start.get('val_illegal_pct'))} → {_pct(best.get('val_illegal_pct'))} → {_pct(last.get('val_illegal_pct'))}."),
        "Stage 06 measures the kept actor on the test prompts."]
    return "\n".join(lines)


def _known(value) -> bool:
    """A number that is neither missing nor NaN."""
    return value is not None and not math.isnan(value)


def report(metrics: Mapping[str, Any]) -> str:
    """Stage 07: which figures were written and which users the case studies show."""
    cases = metrics.get("cases", {})
    shown = "; ".join(f"{group}: user {case['user_id']}, {len(case['models'])} models" for group, case in cases.items())
    lines = [
        (f"{HEAD}: {len(metrics.get('figures', {}))} figures (PNG and PDF) in `{metrics.get('figures_dir')}`, "
        "drawn only from the recorded results."),
        (f"Case studies ({shown or 'none'}) pick the user on whom the models disagree most on the control metric: "
        "they show the differences the tables average over.")]
    runs = metrics.get("rl_head_to_head") or []
    if runs:
        lines.append("RL runs on the same sampled-answer budget: " + "; ".join(
            f"{r['run']} ({r['algorithm']}, {r['reward']} reward) {r['s_per_update']:.2f} s/update, sampled list reward "
            f"{r['list_reward_first']:.3f} → {r['list_reward_last']:.3f}, illegal items "
            f"{_pct(r['illegal_pct_first'])} → {_pct(r['illegal_pct_last'])} (first → last quarter)"
            + (f", paired gain on the valid prompts {r['reward_gain']:+.3f} [{r['reward_gain_lo']:+.3f}, "
               f"{r['reward_gain_hi']:+.3f}]" if _known(r.get("reward_gain")) else "")
            for r in runs) + ".")
    return "\n".join(lines)
