"""The instruction vocabulary every stage shares: task names, test groups, the intent, the record.

A stage-03 record (`InstructionRecord`) is one JSON object per line of the instruction files; it
is read and written only by `read_records` / `write_records`, and its intent is read only by
`intent_of`. The task names of the paper (§2.2.1) and the test groups of Tables 2-5 (§3.2) are
defined here once; `Intent` is the control intention the rewards, metrics and label rules obey.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypedDict

# §2.2.1: I0 plain recommendation, I1 category control (+C / -C), I2 proportion control
# (<= / >= / ~= m), I3 item search (+C / -C), I4 general chat.
TASKS = ("I0", "I1+C", "I1-C", "I2<=", "I2>=", "I2~=", "I3+C", "I3-C", "I4")
INTENT_KIND = {"I0": "I0", "I1+C": "+C", "I1-C": "-C", "I2<=": "<=", "I2>=": ">=", "I2~=": "~=",
               "I3+C": "+C", "I3-C": "-C"}
RL_TASKS = ("I0", "I1+C", "I1-C", "I2<=", "I2>=", "I2~=")  # the tasks the paper's rewards are defined for
KINDS = ("I0", "+C", "-C", "<=", ">=", "~=")
PROPORTION_KINDS = ("<=", ">=", "~=")

# Test groups of Tables 2-5: (group, task, m, k); k=None draws k in 11..15 (the formatting test).
TEST_GROUPS = (
    ("I0", "I0", None, 10),
    ("I1+C", "I1+C", None, 10),
    ("I1-C", "I1-C", None, 10),
    ("I2<=20", "I2<=", 0.2, 10),
    ("I2~=30", "I2~=", 0.3, 10),
    ("I2>=30", "I2>=", 0.3, 10),
    ("k11-15", "I0", None, None),
)
NOCONTROL = "_nocontrol"  # suffix of a test group asked again without the control sentence


@dataclass(frozen=True)
class Intent:
    """A control intention of a prompt (`intent_of(record)` reads a record's).

    Attributes:
        kind: "I0" (plain recommendation), "+C"/"-C" (I1: only / no items of C), "<=", ">=",
            "~=" (I2: share of C at most / at least / about m).
        category: The target category C (None for I0).
        m: Target proportion of C for the I2 kinds, in [0, 1].
    """

    kind: str
    category: str | None = None
    m: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"intent kind {self.kind!r} unknown; use one of {KINDS}")
        if self.kind in PROPORTION_KINDS and (self.m is None or not 0 <= self.m <= 1):
            raise ValueError(f"intent {self.kind!r} needs m in [0, 1], got m={self.m!r}")
        if self.kind != "I0" and not self.category:
            raise ValueError(f"intent {self.kind!r} needs a category, got {self.category!r}")


def target_count(k: int, m: float) -> Fraction:
    """k·m as an exact fraction (m read as the short decimal it was written as: 0.3 -> 3/10).

    In floating point 10 · (0.1 · 3) = 3.0000000000000004, which would flip `Count_in ≥ k·m`
    for Count_in = 3; rewards, CPA and the label rules all compare against this exact value.
    """
    return k * Fraction(float(m)).limit_denominator(10_000)


def proportion_bounds(kind: str, k: int, m: float) -> tuple[int, int]:
    """(min, max) number of items in C that satisfy an I2 rule: ≤ m, ≥ m or ≈ m (exactly round(k·m))."""
    km = target_count(k, m)
    if kind == "<=":
        return 0, math.floor(km)
    if kind == ">=":
        return math.ceil(km), k
    if kind == "~=":
        return round(km), round(km)
    raise ValueError(f"proportion kind {kind!r} is not one of '<=', '>=', '~='")


def intent_rule(intent: Intent, k: int, in_category: Callable[[int], bool]) -> Callable[[int, list[int]], bool]:
    """Whether an item may join a list so far and the full list still obey the intent.

    The one rule behind stage 03's control labels and stage 06's intention-filtered teacher row:
    +C takes only items in C, -C only items outside, and an I2 rule admits items in C while
    fewer than its maximum are in, and items outside while the minimum in C stays reachable.
    """
    if intent.kind == "I0":
        return lambda item, chosen: True
    if intent.kind in ("+C", "-C"):
        want = intent.kind == "+C"
        return lambda item, chosen: in_category(item) == want
    lo, hi = proportion_bounds(intent.kind, k, intent.m)

    def accept(item: int, chosen: list[int]) -> bool:
        n_in = sum(in_category(i) for i in chosen)
        return n_in < hi if in_category(item) else len(chosen) - n_in < k - lo

    return accept


class InstructionRecord(TypedDict):
    """One line of a stage-03 JSONL file (CONTRACTS.md). Prompt-only files have empty `completion`
    and `label`; test prompts also carry `test_group`."""

    task: str
    user_id: int | None
    split: str
    candidates: list[int] | None
    prompt: list[dict[str, str]]  # chat messages: system, user
    completion: str
    k: int
    intent: dict[str, Any]  # {"kind", "category", "m"}: read it with `intent_of`
    target: int | None
    history: list[int]
    label: list[int]


def intent_of(record: dict[str, Any]) -> Intent:
    """The record's `Intent` (a record without one, e.g. I4 chat, is plain I0)."""
    raw = record.get("intent") or {"kind": "I0"}
    if isinstance(raw, str):  # stage 06 stores it as JSON text in predictions.parquet
        raw = json.loads(raw)
    return Intent(raw["kind"], raw.get("category"), raw.get("m"))


def write_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """One JSON object per line, sorted keys, UTF-8: byte-identical for the same records."""
    path = Path(path)
    text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    path.write_bytes(text.encode("utf-8"))
    return path


def read_records(path: str | os.PathLike) -> list[InstructionRecord]:
    """Records of a JSONL file, with a one-line error naming the file and line when one is malformed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run stage 03_instructions first")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n} is not valid JSON ({err}); rerun stage 03_instructions") from None
    return rows


def select_tasks(records: list[dict], tasks: str | list[str]) -> list[dict]:
    """Records whose task is in `tasks` (`"all"`, or names/prefixes: `"I1"` keeps `I1+C` and `I1-C`)."""
    if tasks == "all":
        return list(records)
    if isinstance(tasks, str):
        tasks = [tasks]
    kept = [r for r in records if any(r["task"] == t or r["task"].startswith(t) for t in tasks)]
    if not kept:
        found = sorted({r["task"] for r in records})
        raise ValueError(f"param 'tasks'={tasks} matches no record; tasks present: {', '.join(found)}")
    return kept


def category_items(record: dict[str, Any], members: Callable[[str], Collection[int]]) -> Collection[int]:
    """Ids of the record's intent category (`members` = `Catalog.items_in`); empty for I0."""
    category = intent_of(record).category
    return members(category) if category else frozenset()
