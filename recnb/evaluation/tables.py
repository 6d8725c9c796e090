"""The paper's Tables 2–5 from stage 06's summary frame: CSV (numbers) and markdown (best in bold).

CSV holds one row per (matcher, model) and one plain number per column, so it can be read back
without parsing; the markdown mirrors the paper: uncontrolled values in parentheses, best value of
each column in **bold** (highest, or lowest for "↓" columns), units in the headers. Where invented
titles flatter a column (RepeatItem and InHistory), the value of a model whose
items in that group are mostly (≥ 50 %) not catalog titles is marked † and never bold: an answer of
invented titles has no history items and no items of the excluded category, so its low "errors"
would otherwise win the column. TCP(−C) and CPA need no such mark: `recnb.metrics` reads every
position without a catalog item against the intention (`NOTES` says so under Tables 3 and 4). Fuzzy matching
(Levenshtein ≤ 3) is the paper's convention and comes first; exact matching follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recnb.tasks import NOCONTROL

UNRELIABLE_NON_EXIST_PCT = 50.0  # columns invented titles flatter: a model with this NonExist (% items) is not ranked
MATCHER_ORDER = ("fuzzy", "exact")
NO_CONTROL = " (no control)"  # suffix of a paired column's twin value in the CSV


@dataclass(frozen=True)
class Column:
    """One table column: where its number comes from and how the markdown shows it."""

    name: str  # CSV header (with unit)
    group: str  # test_group of the summary
    metric: str  # summary metric key
    higher_is_better: bool = True
    paired: bool = False  # show the `<group>_nocontrol` value in parentheses
    digits: int = 4
    invented_flatters: bool | None = None  # invented titles make it look good (default: the "↓" columns)

    @property
    def flattered(self) -> bool:
        return (not self.higher_is_better) if self.invented_flatters is None else self.invented_flatters


def _hr_ndcg(group: str, k: str = "10") -> list[Column]:
    return [Column(f"{group} HR@{k}", group, "hr"), Column(f"{group} NDCG@{k}", group, "ndcg")]


TABLES: dict[str, tuple[str, list[Column]]] = {
    "table2": ("Table 2 — sequential recommendation (I0, k = 10)", [
        *_hr_ndcg("I0"), Column("I0 HR@5", "I0", "hr5"), Column("I0 NDCG@5", "I0", "ndcg5")]),
    "table3": (("Table 3 — category control I1 (TCP@10 in % of the 10 positions; (…) = no control sentence; "
                "SASRec and Popularity = their rankings filtered by the intention)"), [
        *_hr_ndcg("I1+C"), Column("I1+C TCP@10 (%) ↑", "I1+C", "tcp_pct", True, True, 2),
        *_hr_ndcg("I1-C"), Column("I1-C TCP@10 (%) ↓", "I1-C", "tcp_pct", False, True, 2, False)]),
    "table4": (("Table 4 — category proportion control I2 (CPA in % of lists; (…) = no control sentence; "
                "SASRec and Popularity = their rankings filtered by the intention)"), [
        col for g in ("I2<=20", "I2~=30", "I2>=30")
        for col in (*_hr_ndcg(g), Column(f"{g} CPA (%) ↑", g, "cpa_pct", True, True, 2))]),
    "table5": ("Table 5 — formatting for k ∈ 11..15 (errors in % of items, CorrectCount in % of lists)", [
        Column("CorrectCount (% lists) ↑", "k11-15", "correct_count_pct", True, False, 2),
        Column("RepeatItem@K (% items) ↓", "k11-15", "repeat_item_pct", False, False, 2),
        Column("NonExist@K (% items) ↓", "k11-15", "non_exist_pct", False, False, 2, False),
        Column("InHistory@K (% items) ↓", "k11-15", "in_history_pct", False, False, 2),
        Column("HR@K ↑", "k11-15", "hr"), Column("NDCG@K ↑", "k11-15", "ndcg")]),
}

# The rule of `recnb.metrics` under the tables it changes: no answer obeys an intention by naming nothing.
NOTES = {
    "table3": ("TCP(−C) counts every one of the 10 positions that holds no catalog item (missing, unparseable or "
               "invented) as an item of C: an empty answer scores 100 %, not 0 %."),
    "table4": ("CPA counts a list as meeting the rule only if it holds however its positions without a catalog "
               "item are read (all in C or all out): an empty or invented answer fails every kind."),
}


INTERVAL_NOTE = ("± half the width of the 95 % percentile-bootstrap interval over the group's users (users resampled, "
                 "the same resamples for every model; bounds in the CSV's `lo` / `hi` columns). Bold marks the best "
                 "value, not a significant difference: the paired differences are in control_effects.md.")


def build_table(summary: pd.DataFrame, name: str, models: list[str], primary: str = "fuzzy") -> pd.DataFrame:
    """One table as numbers: rows (matcher, model), columns of `TABLES[name]` (+ `… (no control)`)."""
    _, columns = TABLES[name]
    index = summary.set_index(["matcher", "model", "test_group"])
    rows = []
    order = sorted(MATCHER_ORDER, key=lambda m: m != primary)
    for matcher in [m for m in order if m in set(summary["matcher"])]:
        for model in models:
            row = {"matcher": matcher, "model": model}
            for c in columns:
                cells = [(c.name, c.group)] + ([(c.name + NO_CONTROL, c.group + NOCONTROL)] if c.paired else [])
                for header, group in cells:
                    row[header] = _lookup(index, matcher, model, group, c.metric)
                    for end in ("lo", "hi"):
                        if f"{c.metric}_{end}" in index.columns:
                            row[f"{header} {end}"] = _lookup(index, matcher, model, group, f"{c.metric}_{end}")
            if any(not _missing(v) for k, v in row.items() if k not in ("matcher", "model")):
                rows.append(row)
    table = pd.DataFrame(rows)
    # NonExist per (matcher, model, group) of the ↓ columns, for to_markdown's † rule (not a CSV column)
    table.attrs["non_exist_pct"] = {
        (r["matcher"], r["model"], c.group): _lookup(index, r["matcher"], r["model"], c.group, "non_exist_pct")
        for r in rows for c in columns if c.flattered}
    return table


def _lookup(index: pd.DataFrame, matcher: str, model: str, group: str, metric: str) -> float:
    key = (matcher, model, group)
    if key not in index.index or metric not in index.columns:
        return math.nan
    return float(index.loc[key, metric])


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def to_markdown(table: pd.DataFrame, name: str, extra: dict[str, dict[str, str]] | None = None,
                matchers: tuple[str, ...] | None = None) -> str:
    """Markdown of a numeric table, one block per matcher, best per column in bold.

    Args:
        extra: additional text columns per model (e.g. Table 5's MMLU / GSM8K), `{column: {model: text}}`.
        matchers: only these matchers' blocks (default: every matcher in the table).
    """
    title, columns = TABLES[name]
    lines = [f"### {title}", ""]
    non_exist = table.attrs.get("non_exist_pct", {})
    daggers = False
    for matcher, part in table.groupby("matcher", sort=False):
        if matchers is not None and matcher not in matchers:
            continue
        lines += [f"Title matching: **{matcher}**" + (" (paper convention)" if matcher == "fuzzy" else ""), ""]
        headers = ["model", *[c.name for c in columns], *(extra or {})]
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]

        def unreliable(model: str, c: Column, matcher: str = matcher) -> bool:
            value = non_exist.get((matcher, model, c.group), math.nan)
            return c.flattered and not _missing(value) and value >= UNRELIABLE_NON_EXIST_PCT

        best = {c.name: _best(part.loc[[not unreliable(m, c) for m in part["model"]], c.name], c.higher_is_better)
                for c in columns}
        for rec in part.to_dict("records"):
            cells = [rec["model"]]
            for c in columns:
                text = _fmt(rec[c.name], c.digits)
                if unreliable(rec["model"], c) and not _missing(rec[c.name]):
                    text, daggers = text + "†", True
                elif not _missing(rec[c.name]) and rec[c.name] == best[c.name]:
                    text = f"**{text}**"
                text += _pm(rec, c.name, c.digits)
                if c.paired:
                    twin = c.name + NO_CONTROL
                    text += f" ({_fmt(rec[twin], c.digits)}{_pm(rec, twin, c.digits)})"
                cells.append(text)
            cells += [extra[k].get(rec["model"], "–") for k in (extra or {})]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if any(f"{c.name} lo" in table.columns for c in columns):
        lines += [INTERVAL_NOTE, ""]
    if name in NOTES:
        lines += [NOTES[name], ""]
    if daggers:
        lines += [(f"† at least {UNRELIABLE_NON_EXIST_PCT:.0f} % of this model's items in the group are not catalog "
                   "titles, so a low value here is no merit: not ranked for bold."), ""]
    return "\n".join(lines)


def _pm(rec: dict, name: str, digits: int) -> str:
    """` ±h`: half the width of the cell's 95 % interval (empty without one)."""
    lo, hi = rec.get(f"{name} lo", math.nan), rec.get(f"{name} hi", math.nan)
    return "" if _missing(lo) or _missing(hi) else f" ±{(hi - lo) / 2:.{digits}f}"


def _best(values: pd.Series, higher: bool) -> float:
    values = values.dropna()
    if values.empty:
        return math.nan
    return float(values.max() if higher else values.min())


def _fmt(value, digits: int) -> str:
    return "–" if _missing(value) else f"{value:.{digits}f}"


def write_tables(summary: pd.DataFrame, out_dir: Path, models: list[str],
                 extra: dict[str, dict[str, dict[str, str]]] | None = None,
                 primary: str = "fuzzy") -> dict[str, pd.DataFrame]:
    """Write `table2..table5` `.csv` + `.md` into `out_dir`; returns the numeric tables.

    Args:
        models: row order (labels as in the summary; absent models are left out).
        extra: per table name, text columns for `to_markdown` (also added to the CSV).
        primary: the matcher shown first ("fuzzy" is the paper's convention, or "exact").
    """
    tables = {}
    for name in TABLES:
        table = build_table(summary, name, models, primary)
        md = to_markdown(table, name, (extra or {}).get(name)) if not table.empty else f"### {TABLES[name][0]}\n\nno rows\n"
        for column, by_model in ((extra or {}).get(name) or {}).items() if not table.empty else ():
            table[column] = table["model"].map(by_model)
        table.to_csv(Path(out_dir) / f"{name}.csv", index=False)
        (Path(out_dir) / f"{name}.md").write_text(md)
        tables[name] = table
    return tables


EFFECT_NAMES = {"I1+C": "TCP(+C) % ↑", "I1-C": "TCP(−C) % ↓", "I2<=20": "CPA ≤ 20 % ↑", "I2~=30": "CPA ≈ 30 % ↑",
                "I2>=30": "CPA ≥ 30 % ↑"}


def effects_markdown(effects: pd.DataFrame) -> str:
    """`control_effects.md`: per model and control group, the figure with the control sentence, without
    it (same users) and the paired difference with its 95 % interval (`intervals.control_effects`)."""
    lines = ["### What the control sentence changes (same users with and without it)", ""]
    if effects.empty:
        return "\n".join([*lines, "no control groups", ""])
    groups = [g for g in EFFECT_NAMES if g in set(effects["test_group"])]
    lines += ["| model | " + " | ".join(EFFECT_NAMES[g] for g in groups) + " |", "|" + "---|" * (len(groups) + 1)]
    index = effects.set_index(["model", "test_group"])
    for model in dict.fromkeys(effects["model"]):
        cells = [model]
        for g in groups:
            if (model, g) not in index.index:
                cells.append("–")
                continue
            r = index.loc[(model, g)]
            cells.append(f"{r['with']:.1f} vs {r['without']:.1f}: {r['delta']:+.1f} [{r['delta_lo']:+.1f}, {r['delta_hi']:+.1f}]")
        lines.append("| " + " | ".join(cells) + " |")
    matcher = effects["matcher"].iloc[0]
    lines += ["", (f"with vs without the sentence: difference [95 % paired bootstrap interval over users], {matcher} "
                   "matching. An interval that excludes 0 is a change the sample of users cannot explain; "
                   "TCP(−C) should fall, the others rise."), ""]
    return "\n".join(lines)


def write_control_effects(effects: pd.DataFrame, out_dir: Path) -> None:
    """`control_effects.csv` + `.md` in `out_dir`."""
    effects.to_csv(Path(out_dir) / "control_effects.csv", index=False)
    (Path(out_dir) / "control_effects.md").write_text(effects_markdown(effects))


START_NAMES = {"illegal_item_pct": "Illegal (% items) ↓", "repeat_item_pct": "RepeatItem ↓",
               "non_exist_pct": "NonExist ↓", "in_history_pct": "InHistory ↓", "hr": "HR@10 ↑"}


def start_effects_markdown(effects: pd.DataFrame) -> str:
    """`start_effects.md`: what each model changes over the model it started from (`intervals.start_effects`)."""
    group = effects["test_group"].iloc[0] if len(effects) else "I0"
    lines = [f"### What each stage changes over its start (same users, {group})", ""]
    if effects.empty:
        return "\n".join([*lines, "no model in the table started from another row's model", ""])
    figures = [f for f in START_NAMES if f in set(effects["figure"])]
    lines += ["| model (start) | " + " | ".join(START_NAMES[f] for f in figures) + " |",
              "|" + "---|" * (len(figures) + 1)]
    index = effects.set_index(["model", "start", "figure"])
    for model, start in dict.fromkeys(zip(effects["model"], effects["start"])):
        cells = [f"{model} ({start})"]
        for f in figures:
            r = index.loc[(model, start, f)]
            digits = 3 if f == "hr" else 1
            cells.append(f"{r['value']:.{digits}f} vs {r['start_value']:.{digits}f}: {r['delta']:+.{digits}f} "
                         f"[{r['delta_lo']:+.{digits}f}, {r['delta_hi']:+.{digits}f}]")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", (f"model vs its start: difference [95 % paired bootstrap interval over the "
                   f"{group} users], {effects['matcher'].iloc[0]} matching. Illegal = RepeatItem + "
                   "NonExist + InHistory among the first K; RL is meant to lower it."), ""]
    return "\n".join(lines)


def write_start_effects(effects: pd.DataFrame, out_dir: Path) -> None:
    """`start_effects.csv` + `.md` in `out_dir`."""
    effects.to_csv(Path(out_dir) / "start_effects.csv", index=False)
    (Path(out_dir) / "start_effects.md").write_text(start_effects_markdown(effects))
