"""Stage 03: instruction data of the paper's SL stage (§2.2) with teacher label augmentation.

`build_instruction_sets(prepared, teacher, config)` turns stage 01's tables and stage 02's
`teacher_topk.parquet` into the files of CONTRACTS.md: `sft_train`, `sft_train_palr`, `sft_valid`,
`rl_prompts`, `test_prompts` (JSONL) and `stats.json` (Table 7 counts and counted skips);
`write_instruction_sets` writes them, byte-identical for the same seed. `check_labels` verifies
every label with the metric functions stage 06 uses. Where the pieces live:
`prompts` (the paper's templates), `labels` (label rules), `specs` (one sample), `build` (how many
of which, rendering), `sharegpt` (I4), all in this package.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recnb import artifacts as col
from recnb import progress, record
from recnb.answer import parse_titles
from recnb.catalog import Catalog
from recnb.instructions.build import (
    BuildContext,
    build_catalog_lists,
    build_palr,
    build_rl_prompts,
    build_sft_train,
    build_test_prompts,
    build_valid,
    render_row,
)
from recnb.instructions.config import InstructionConfig
from recnb.instructions.sharegpt import load_sharegpt
from recnb.instructions.specs import index_teacher
from recnb.metrics import cpa, formatting, tcp_at_k
from recnb.tasks import Intent, intent_of, write_records

if TYPE_CHECKING:
    from recnb.data.build import Prepared


TABLE7_ROWS = ("I0", "I1+C", "I1-C", "I2<=", "I2>=", "I2~=", "I3+C", "I3-C", "I4")


@dataclass
class InstructionSets:
    """Rows of every output file (name without `.jsonl`) and the stats that go to stats.json."""

    files: dict[str, list[dict[str, Any]]]
    stats: dict[str, Any]


def load_teacher(stage_dir: str | os.PathLike) -> pd.DataFrame:
    """Stage 02's `teacher_topk.parquet` (one row per user and split), with a clear error if absent."""
    path = Path(stage_dir) / col.TEACHER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run stage 02_sasrec first")
    return pd.read_parquet(path)


def build_context(prepared: Prepared, teacher: pd.DataFrame, config: InstructionConfig) -> BuildContext:
    """What every builder draws from: the catalog, the indexed teacher rows and each user's train items."""
    train_items = {int(u): [int(i) for i in seq] for u, seq in zip(prepared.splits[col.USER], prepared.splits[col.TRAIN_ITEMS])}
    return BuildContext(Catalog(prepared.items), index_teacher(teacher), train_items, config)


def build_instruction_sets(prepared: Prepared, teacher: pd.DataFrame, config: InstructionConfig,
                           warn_skips: bool = True) -> InstructionSets:
    """Build every instruction file in memory.

    Args:
        prepared: stage 01's `recnb.data.Prepared` (its `items` and `splits` are read).
        teacher: stage 02's teacher frame (CONTRACTS.md columns).
        config: sample counts and options.
        warn_skips: warn when samples were skipped (no label fits the intention); notebook 03 passes
            False because it shows `stats["skipped"]` as a table right after.
    """
    ctx = build_context(prepared, teacher, config)
    catalog = ctx.catalog
    train, lists = build_sft_train(ctx), build_catalog_lists(ctx)
    files = {
        "sft_train": ([render_row(s, catalog) for s in train] + _sharegpt_rows(ctx, len(train))
                      + [render_row(s, catalog) for s in lists]),
        "sft_train_palr": [render_row(s, catalog) for s in build_palr(ctx, train)],
        "sft_valid": [render_row(s, catalog) for s in build_valid(ctx)],
        "rl_prompts": [render_row(s, catalog, completion=False) for s in build_rl_prompts(ctx)],
        "test_prompts": _test_rows(ctx),
    }
    if ctx.skips and warn_skips:
        detail = ", ".join(f"{key}: {n}" for key, n in sorted(ctx.skips.items()))
        warnings.warn(f"stage 03 skipped {sum(ctx.skips.values())} sample(s), counted in stats.json ({detail})", stacklevel=2)
    return InstructionSets(files, instruction_stats(files, ctx.skips, prepared.stats.get("dataset"), len(lists)))


def _sharegpt_rows(ctx: BuildContext, n_rec: int) -> list[dict[str, Any]]:
    """I4 rows making up `sharegpt_fraction` of the whole SFT set (paper: 50%); none when off."""
    frac, path = ctx.config.sharegpt_fraction, ctx.config.sharegpt_path
    if not path or frac <= 0:
        return []
    if frac >= 1:
        raise ValueError(f"sharegpt_fraction={frac} must be in [0, 1) (share of I4 in the SFT set)")
    rows, skips = load_sharegpt(path, round(n_rec * frac / (1 - frac)), ctx.rng("sft_train_i4"))
    ctx.skips.update({f"sft_train/I4/{reason}": n for reason, n in skips.items()})
    return rows


def _test_rows(ctx: BuildContext) -> list[dict[str, Any]]:
    """Test prompts, then the control groups again without the control sentence (`_nocontrol`)."""
    built = build_test_prompts(ctx)
    rows = [{**render_row(s, ctx.catalog, completion=False), "test_group": g} for g, s in built]
    rows += [
        {**render_row(s, ctx.catalog, completion=False, control=False), "test_group": f"{g}_nocontrol"}
        for g, s in built
        if s.task != "I0"
    ]
    return rows


def instruction_stats(files: dict[str, list[dict]], skips: Counter, dataset: str | None,
                      catalog_lists: int = 0) -> dict[str, Any]:
    """stats.json: Table 7 (SFT train count per instruction type), per-file counts and skips.

    The last `catalog_lists` rows of sft_train are catalog lists (not in the paper): counted apart
    (`catalog_minus_lists` of them I1-C), not in Table 7 nor in `counts`; `rows` counts every row of a file."""
    paper = {**files, "sft_train": files["sft_train"][:len(files["sft_train"]) - catalog_lists]}
    counts = {name: dict(sorted(Counter(r.get("test_group", r["task"]) for r in rows).items())) for name, rows in paper.items()}
    table7 = {task: counts["sft_train"].get(task, 0) for task in TABLE7_ROWS}
    skipped: dict[str, dict[str, dict[str, int]]] = {}
    for key, n in sorted(skips.items()):
        file, task, reason = key.split("/")
        skipped.setdefault(file, {}).setdefault(task, {})[reason] = n
    return {
        "dataset": dataset,
        "table7": {**table7, "ALL": sum(table7.values())},
        "counts": counts,
        "rows": {name: len(rows) for name, rows in files.items()},
        "catalog_lists": catalog_lists,
        "catalog_minus_lists": sum(r["task"] == "I1-C" for r in files["sft_train"][len(paper["sft_train"]):]),
        "skipped": skipped,
        "skipped_total": int(sum(skips.values())),
    }


def write_instruction_sets(sets: InstructionSets, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write `<name>.jsonl` for every file (sorted keys, one object per line) and `stats.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in sets.files.items():
        written[name] = write_records(out / f"{name}.jsonl", rows)
    written["stats"] = record.write_json(out / col.STATS_FILE, sets.stats)
    return written


def label_problems(row: dict[str, Any], catalog: Catalog) -> list[str]:
    """What is wrong with one labelled row, judged by the metric functions of stage 06 (empty = fine).

    The completion is parsed back with `recnb.answer`, so the text and the label ids must agree.
    """
    if row["task"] == "I4":
        return []
    label, k, intent = row["label"], row["k"], intent_of(row)
    titles = parse_titles(row["completion"])
    problems = [] if catalog.match_many(titles) == label else ["completion_does_not_parse_to_label"]
    fmt = formatting(label, [catalog.title(i) for i in label], k, row["history"])
    problems += [name for name in ("repeat", "non_exist", "in_history") if fmt[name]]
    problems += [] if fmt["correct_count"] else ["not_k_items"]
    if row["target"] is not None and (not label or label[0] != row["target"]):
        problems.append("target_not_first")
    if intent.kind in ("+C", "-C"):
        tcp = tcp_at_k(label, catalog.items_in(intent.category), k)
        problems += [] if tcp == (1.0 if intent.kind == "+C" else 0.0) else ["breaks_category_control"]
    if intent.kind in ("<=", ">=", "~="):
        exact = {"~=": cpa(label, catalog.items_in(intent.category), k, Intent(">=", intent.category, intent.m))
                 * cpa(label, catalog.items_in(intent.category), k, Intent("<=", intent.category, intent.m))}
        ok = cpa(label, catalog.items_in(intent.category), k, intent) * exact.get(intent.kind, 1.0)
        problems += [] if ok == 1.0 else ["breaks_proportion_rule"]
    return problems


def check_labels(rows: Iterable[dict[str, Any]], items: pd.DataFrame) -> pd.DataFrame:
    """Problem counts per task over labelled rows (all zeros when every label obeys its instruction).

    Returns:
        One row per task: `rows` checked and a column per problem found (absent when none).
    """
    catalog = Catalog(items)
    counts: dict[str, Counter] = {}
    for row in rows:
        counter = counts.setdefault(row["task"], Counter())
        counter["rows"] += 1
        counter.update(label_problems(row, catalog))
    frame = pd.DataFrame.from_dict(counts, orient="index").fillna(0).astype(np.int64)
    return frame.rename_axis("task").sort_index()


def token_lengths(files: dict[str, list[dict[str, Any]]], tokenizer: Any) -> pd.DataFrame:
    """Prompt (chat template + generation prompt) and completion lengths in tokens, one row per sample.

    Args:
        files: `InstructionSets.files` (or a subset).
        tokenizer: a Hugging Face tokenizer with a chat template (`recnb.llm.load_tokenizer`).
    """
    records = []
    bar = progress.bar(total=sum(len(rows) for rows in files.values()), desc="tokenizing", unit="row")
    for name, rows in files.items():
        for row in rows:
            bar.update()
            text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            n_prompt = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            n_completion = len(tokenizer(row["completion"], add_special_tokens=False)["input_ids"]) if row["completion"] else 0
            records.append((name, row["task"], n_prompt, n_completion))
    bar.close()
    return pd.DataFrame(records, columns=["file", "task", "prompt_tokens", "completion_tokens"])


def length_percentiles(lengths: pd.DataFrame) -> pd.DataFrame:
    """p50 / p90 / p99 / max of prompt and completion tokens per file."""
    table = lengths.groupby("file")[["prompt_tokens", "completion_tokens"]].quantile([0.5, 0.9, 0.99, 1.0])
    table = table.unstack()
    table.columns = [f"{what.split('_')[0]}_{'max' if q == 1.0 else f'p{round(q * 100)}'}" for what, q in table.columns]
    return table.round(0).astype(np.int64)


def warn_long_prompts(lengths: pd.DataFrame, max_prompt_tokens: int) -> int:
    """Warn (and return how many) when prompts exceed `max_prompt_tokens`, where later stages cut history."""
    n_long = int((lengths["prompt_tokens"] > max_prompt_tokens).sum())
    if n_long:
        warnings.warn(
            f"{n_long} of {len(lengths)} prompts exceed max_prompt_tokens={max_prompt_tokens} "
            f"(longest {lengths['prompt_tokens'].max()}); stages 04-06 will drop their oldest history items",
            stacklevel=2,
        )
    return n_long


def show_samples(rows: Iterable[dict[str, Any]], per_task: int = 1, groups: Sequence[str] | None = None) -> str:
    """The first `per_task` rows of each task (test group for test prompts) as readable text; with
    `groups`, only those tasks or groups, in the rows' order."""
    shown: Counter = Counter()
    blocks = []
    for row in rows:
        group = row.get("test_group", row["task"])
        if shown[group] >= per_task or (groups is not None and group not in groups):
            continue
        shown[group] += 1
        user = row["prompt"][-1]["content"]
        blocks.append(f"[{group}] k={row['k']} intent={row['intent']}\nUSER: {user}\nANSWER:\n{row['completion']}")
    return "\n\n".join(blocks)


def stage_metrics(sets: InstructionSets, label_report: pd.DataFrame, lengths: pd.DataFrame | None = None,
                  max_prompt_tokens: int = 0) -> dict[str, Any]:
    """metrics.json of stage 03: rows per file, Table 7, skips, label problems, prompt lengths."""
    metrics: dict[str, Any] = {
        "rows": sets.stats["rows"],
        "table7": sets.stats["table7"],
        "catalog_lists": sets.stats["catalog_lists"],
        "catalog_minus_lists": sets.stats["catalog_minus_lists"],
        "skipped_total": sets.stats["skipped_total"],
        "label_problems": int(label_report.drop(columns="rows").to_numpy().sum()),
    }
    if lengths is not None:
        tokens = lengths["prompt_tokens"]
        metrics |= {"prompt_tokens_p50": float(tokens.quantile(0.5)), "prompt_tokens_p99": float(tokens.quantile(0.99)),
                    "prompt_tokens_max": int(tokens.max()), "prompts_over_max": int((tokens > max_prompt_tokens).sum())}
    return metrics
