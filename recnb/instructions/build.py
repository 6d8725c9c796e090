"""How many samples of which kind stage 03 draws, and how a sample becomes a JSONL row.

One builder per output file (`build_sft_train`, `build_palr`, `build_valid`, `build_rl_prompts`,
`build_test_prompts`) returns `Spec`s in a fixed order, each file from its own seeded random
stream, so the same seed gives the same files whatever is built first. `render_row` turns a spec
into the JSON object of CONTRACTS.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recnb import prompts
from recnb.answer import format_item_list
from recnb.catalog import Catalog
from recnb.instructions.config import InstructionConfig
from recnb.instructions.labels import SkipSample, negative_category, palr_window
from recnb.instructions.specs import PROPORTIONS, Spec, TeacherRow, search_spec, teacher_spec
from recnb.tasks import INTENT_KIND, RL_TASKS, TEST_GROUPS

FILES = ("sft_train", "sft_train_palr", "sft_valid", "rl_prompts", "test_prompts")  # each as <name>.jsonl
_SALT = {name: i + 1 for i, name in enumerate(FILES + ("sft_train_i4", "sft_train_catalog"))}  # a stream per file


@dataclass
class BuildContext:
    """Everything the builders share: the catalog, teacher rows, train sequences and skip counts."""

    catalog: Catalog
    teacher: dict[tuple[int, str], TeacherRow]
    train_items: dict[int, list[int]]
    config: InstructionConfig
    skips: Counter = field(default_factory=Counter)

    def rng(self, file: str) -> np.random.Generator:
        """The random stream of one output file (independent of the order files are built in)."""
        return np.random.default_rng([self.config.seed, _SALT[file]])

    def users(self) -> list[int]:
        """Every user of stage 01's splits, sorted (a missing teacher row is then a counted skip)."""
        return sorted(self.train_items)

    def attempt(self, file: str, task: str, make: Callable[..., Spec], *args: Any) -> Spec | None:
        """`make(*args)`; a SkipSample is counted under `file/task/reason` and gives None."""
        try:
            return make(*args)
        except SkipSample as skip:
            self.skips[f"{file}/{task}/{skip.reason}"] += 1
            return None

    def user_spec(
        self, file: str, group: str, task: str, user: int, split: str, rng: np.random.Generator, k: int,
        m: float | None = None, n_candidates: int = 0, cut_max: int = 0,
    ) -> Spec | None:
        """`teacher_spec` for (user, split); a missing teacher row or a SkipSample is counted, gives None.

        cut_max > 0 draws a cut in 0..cut_max for the row (`cut_row`), after every other draw of the sample.
        """
        row = self.teacher.get((user, split))
        if row is None:
            self.skips[f"{file}/{group}/missing_teacher"] += 1
            return None
        if cut_max:
            row = cut_row(row, int(rng.integers(0, cut_max + 1)))
        return self.attempt(file, group, teacher_spec, task, user, split, row, k, rng, self.catalog, m, n_candidates)


MIN_CUT_HISTORY = 5  # a cut keeps at least this many history items, else the sample keeps its row


def cut_row(row: TeacherRow, cut: int) -> TeacherRow:
    """The row `cut` items earlier: the history less its last `cut` items, the first of those as the
    target, and the same teacher ranking (that of the whole train history, history masked). The
    row itself where the cut is 0 or would leave fewer than `MIN_CUT_HISTORY` history items.

    Not in the paper, where every train sample of a user ends on the same target: a model that sees
    each user dozens of times (24 epochs on the tiny batch) can then answer the first title of an I1
    list from the user alone, and never needs the control sentence for it (docs/RESULTS.md).
    """
    if not cut or len(row.history) < cut + MIN_CUT_HISTORY:
        return row
    return TeacherRow(tuple(row.history[:-cut]), int(row.history[-cut]), row.topk)


def render_row(spec: Spec, catalog: Catalog, completion: bool = True, control: bool = True) -> dict[str, Any]:
    """One JSONL object of CONTRACTS.md from a spec.

    Args:
        completion: False for prompt-only files (RL, test): empty completion and label.
        control: False renders the I0 template (no control sentence) but keeps the intent, so
            eval can measure TCP/CPA of uncontrolled answers (Tables 3-4, values in parentheses).
    """
    template_task = spec.task if control else "I0"
    candidates = catalog.title_list(spec.candidates) if spec.candidates is not None and control else None
    text = prompts.render_instruction(
        template_task, spec.k, catalog.title_list(spec.history), spec.category, spec.m, candidates, spec.phrase
    )
    return {
        "task": spec.task,
        "user_id": spec.user_id,
        "split": spec.split,
        "candidates": list(spec.candidates) if spec.candidates is not None and control else None,
        "prompt": prompts.chat_messages(text),
        "completion": format_item_list(catalog.title_list(spec.label)) if completion else "",
        "k": spec.k,
        "intent": {"kind": INTENT_KIND[spec.task], "category": spec.category, "m": spec.m},
        "target": spec.target,
        "history": list(spec.history),
        "label": list(spec.label) if completion else [],
    }


def no_control_prompt(record: dict[str, Any], catalog: Catalog) -> list[dict[str, str]]:
    """A labelled record's prompt without its control sentence, rendered as a test prompt's `_nocontrol`
    twin (`render_row(..., control=False)`: the I0 template on the same history and k)."""
    intent = record["intent"]
    spec = Spec(record["task"], record["user_id"], record.get("split", "train"), record["k"], record["history"],
                record["target"], [], intent["category"], intent["m"])
    return render_row(spec, catalog, completion=False, control=False)["prompt"]


def cycle_users(rng: np.random.Generator, users: list[int], n: int) -> Iterator[int]:
    """n users: whole shuffled passes over `users`, so each user appears ⌊n/|users|⌋ or one more times."""
    done = 0
    while done < n and users:
        for j in rng.permutation(len(users))[: n - done]:
            yield users[j]
            done += 1


def _k_random(rng: np.random.Generator, task: str) -> int:
    """§2.2.1: k ~ U{1..10}; I2 always asks for 10 (a proportion of a 1-item list means little)."""
    return 10 if task.startswith("I2") else int(rng.integers(1, 11))


def spread_tasks(first: str, second: str, share: float, n: int) -> list[str]:
    """n tasks, `second` at evenly spread positions, round(n * share) of them to within one.

    share 0.5 alternates (first, second, first, ...), the paper's I1±C mix; 2/3 repeats
    (first, second, second).
    """
    return [second if int((j + 1) * share) > int(j * share) else first for j in range(n)]


def _train_spec(ctx: BuildContext, rng: np.random.Generator, file: str, task: str, user: int) -> Spec | None:
    k = _k_random(rng, task)
    m = float(rng.choice(PROPORTIONS)) if task.startswith("I2") else None
    use_candidates = file == "sft_train" and not task.startswith("I2") and rng.random() < ctx.config.candidate_fraction
    n_cand = ctx.config.n_candidates if use_candidates else 0
    cut_max = ctx.config.i1_cut_max if file == "sft_train" and task.startswith("I1") else 0
    return ctx.user_spec(file, task, task, user, "train", rng, k, m, n_cand, cut_max)


def build_sft_train(ctx: BuildContext) -> list[Spec]:
    """SFT train specs: I0, I1±C, I2 ≤/≥/≈ per user (Table 7 proportions), then I3±C per item."""
    rng, cfg, users = ctx.rng("sft_train"), ctx.config, ctx.users()
    plan = [(("I0",), cfg.i0_per_user), (("I1+C", "I1-C"), cfg.i1_per_user), (("I2<=", "I2>=", "I2~="), cfg.i2_per_user)]
    specs = []
    for tasks, per_user in plan:
        n = round(len(users) * per_user)
        names = spread_tasks(*tasks, cfg.i1_minus_share, n) if len(tasks) == 2 else [tasks[j % len(tasks)] for j in range(n)]
        for task, user in zip(names, cycle_users(rng, users, n)):
            specs.append(_train_spec(ctx, rng, "sft_train", task, user))
    n_search = round(len(ctx.catalog.titles) * cfg.i3_per_item)
    for j in range(n_search):
        task = ("I3+C", "I3-C")[j % 2]
        n_cand = cfg.n_candidates if rng.random() < cfg.candidate_fraction else 0
        specs.append(ctx.attempt("sft_train", task, search_spec, task, rng, ctx.catalog, n_cand))
    return [s for s in specs if s is not None]


def top_items(catalog: Catalog, top: int) -> list[int]:
    """The `top` most popular item ids (0: every item), most popular first."""
    ranked = [int(i) for i in catalog.by_popularity]
    return ranked[:top] if top else ranked


def catalog_list_specs(
    catalog: Catalog, items: Sequence[int], passes: int, per_list: int, rng: np.random.Generator,
    histories: Sequence[tuple[int, Sequence[int]]] | None = None, history_len: int = 0,
) -> list[Spec]:
    """Catalog lists: per pass and category, the category's `items` shuffled and cut into lists of at
    most `per_list`, each the label of an I3+C prompt asking for that many items, so every (item,
    category) pair of `items` is listed `passes` times. In generation order. The n-th list of a pass
    takes intention phrase n + pass, so each list position cycles through every phrase across passes.

    With `histories` ((user, item ids) pairs, e.g. train users'), each list answers an I1+C prompt
    instead: a history drawn at random, less any item of the list (an answer never repeats the
    history; a history the list would empty is drawn again), of which the prompt shows the last
    `history_len` items (0: all).
    Not in the paper: the lever that teaches a small LLM which titles are in which genre (docs/RESULTS.md).
    """
    chosen, specs = set(items), []
    task = "I3+C" if histories is None else "I1+C"
    for pass_index in range(passes):
        n_in_pass = 0
        for category in catalog.categories:
            members = sorted(i for i in catalog.items_in(category) if i in chosen)
            members = [members[j] for j in rng.permutation(len(members))]
            for start in range(0, len(members), per_list):
                chunk = members[start:start + per_list]
                user, history = (None, []) if histories is None else _history_outside(histories, chunk, rng)
                history = _last(history, history_len)
                specs.append(Spec(task, user, "train", len(chunk), history, None, chunk, category,
                                  phrase=n_in_pass + pass_index))
                n_in_pass += 1
    return specs


def catalog_minus_specs(
    catalog: Catalog, items: Sequence[int], n_lists: int, per_list: int, rng: np.random.Generator,
    rows: Sequence[tuple[int, TeacherRow]], teacher_top: int = 0, history_len: int = 0,
) -> list[Spec]:
    """`n_lists` I1-C catalog lists, each for a train (user, teacher row) drawn at random: C chosen
    as the test's I1-C prompts choose it (`negative_category`: the genre the teacher's top 10 carry
    most often, not one of the target's), the answer up to `per_list` of `items` outside C and the
    history, drawn at random, in random order; with `teacher_top` N > 0, drawn among the N of those
    the teacher ranks best for the row (its top N, capped by stage 02's `top_n`): relevant titles,
    a random subset of them when N > `per_list`, but one that often holds the user's own target. The
    n-th list takes intention phrase n. A row with no such genre or no such item is drawn again. The
    prompt shows the last `history_len` items of the history (0: all); the answer avoids all of it.
    Not in the paper: the lever for "no C" beside the I1+C lists (docs/RESULTS.md).
    """
    outside = {c: [i for i in items if not catalog.in_category(i, c)] for c in catalog.categories}
    specs = []
    for n in range(n_lists):
        user, history, category, pool = _minus_draw(catalog, outside, rows, rng, teacher_top)
        chunk = [pool[j] for j in rng.choice(len(pool), size=min(per_list, len(pool)), replace=False)]
        specs.append(Spec("I1-C", user, "train", len(chunk), _last(history, history_len), None, chunk, category,
                          phrase=n))
    return specs


def _minus_draw(catalog: Catalog, outside: dict[str, list[int]], rows: Sequence[tuple[int, TeacherRow]],
                rng: np.random.Generator, teacher_top: int = 0) -> tuple[int, list[int], str, list[int]]:
    """A random (user, history, C, items outside C and the history: the teacher's `teacher_top` best of
    them, or all at 0), drawn again while C or the items are missing."""
    for _ in range(100):
        user, row = rows[int(rng.integers(len(rows)))]
        try:
            category = negative_category(row.target, row.topk, catalog)
        except SkipSample:
            continue
        seen = set(row.history)
        if teacher_top:
            allowed = set(outside[category]) - seen
            pool = [i for i in row.topk if i in allowed][:teacher_top]
        else:
            pool = [i for i in outside[category] if i not in seen]
        if pool:
            return user, list(row.history), category, pool
    fix = "raise catalog_minus_teacher or catalog_top" if teacher_top else "raise catalog_top"
    raise ValueError("catalog lists: 100 train rows drawn at random had no genre to refuse or no listed item outside "
                     f"it; {fix} or set catalog_minus_share to 0")


def _last(history: list[int], n: int) -> list[int]:
    """The last `n` items of a history (the most recent; 0: all of it)."""
    if n < 0:
        raise ValueError(f"history length must be >= 0 (0: the whole history), got {n}")
    return history[-n:] if n else history


def _history_outside(histories: Sequence[tuple[int, Sequence[int]]], chunk: list[int],
                     rng: np.random.Generator) -> tuple[int, list[int]]:
    """A random (user, history less the items of `chunk`), drawn again while that leaves no item."""
    for _ in range(100):
        user, seen = histories[int(rng.integers(len(histories)))]
        history = [i for i in seen if i not in chunk]
        if history:
            return user, history
    raise ValueError(f"catalog lists: 100 histories drawn at random all lay inside the list {chunk}")


def build_catalog_lists(ctx: BuildContext) -> list[Spec]:
    """I1+C catalog lists over the `catalog_top` most popular items (0: all), each pair listed
    `catalog_passes` times, under train users' teacher histories, then I1-C lists making up
    `catalog_minus_share` of all the lists; none at catalog_passes 0 (the paper).

    Raises:
        ValueError: `catalog_top` exceeds the catalog, or the teacher frame has no train row.
    """
    cfg = ctx.config
    if not cfg.catalog_passes:
        return []
    if cfg.catalog_top > len(ctx.catalog.by_popularity):
        raise ValueError(f"03_instructions.catalog_top = {cfg.catalog_top} exceeds the catalog's "
                         f"{len(ctx.catalog.by_popularity)} items; lower it, or 0 for every item")
    items = top_items(ctx.catalog, cfg.catalog_top)
    rows = [(user, row) for (user, split), row in sorted(ctx.teacher.items()) if split == "train" and row.history]
    histories = [(user, row.history) for user, row in rows]
    if not histories:
        raise ValueError("catalog lists need train histories, and the teacher frame has no 'train' row with one; "
                         "rerun stage 02_sasrec")
    rng = ctx.rng("sft_train_catalog")
    plus = catalog_list_specs(ctx.catalog, items, cfg.catalog_passes, cfg.catalog_list_len, rng, histories,
                              cfg.catalog_history_len)
    n_minus = round(len(plus) * cfg.catalog_minus_share / (1 - cfg.catalog_minus_share))
    return plus + catalog_minus_specs(ctx.catalog, items, n_minus, cfg.catalog_list_len, rng, rows,
                                      cfg.catalog_minus_teacher, cfg.catalog_history_len)


def build_palr(ctx: BuildContext, train_specs: list[Spec]) -> list[Spec]:
    """PALR-style I0: same users and k as the I0 train samples, labels = the user's real next items."""
    specs = []
    for s in (s for s in train_specs if s.task == "I0"):
        seq = ctx.train_items.get(s.user_id, [])
        spec = ctx.attempt("sft_train_palr", "I0", _palr_spec, s, seq, ctx.config.max_history)
        if spec is not None:
            specs.append(spec)
    return specs


def _palr_spec(i0: Spec, seq: list[int], max_history: int) -> Spec:
    history, label = palr_window(seq, i0.k, max_history)
    return Spec("I0", i0.user_id, "train", len(label), history, label[0], label, phrase=i0.phrase)


def build_valid(ctx: BuildContext) -> list[Spec]:
    """Valid specs (§3.1.1): `valid_per_type` each of I0, I1+C, I1-C, I2≈`valid_m`, k=10, valid split."""
    rng, users, specs = ctx.rng("sft_valid"), ctx.users(), []
    for task in ("I0", "I1+C", "I1-C", "I2~="):
        m = ctx.config.valid_m if task == "I2~=" else None
        got: list[Spec] = []
        for j in rng.permutation(len(users)):  # draw users until the quota is met despite skips
            if len(got) >= ctx.config.valid_per_type:
                break
            spec = ctx.user_spec("sft_valid", task, task, users[j], "valid", rng, 10, m)
            got += [spec] if spec is not None else []
        specs += got
    return specs


def build_rl_prompts(ctx: BuildContext) -> list[Spec]:
    """RL prompt pool from train histories: `rl_per_user` × users prompts, tasks cycling over RL_TASKS."""
    rng, users = ctx.rng("rl_prompts"), ctx.users()
    order = cycle_users(rng, users, round(len(users) * ctx.config.rl_per_user))
    specs = [_train_spec(ctx, rng, "rl_prompts", RL_TASKS[j % len(RL_TASKS)], u) for j, u in enumerate(order)]
    return [s for s in specs if s is not None]


def build_test_prompts(ctx: BuildContext) -> list[tuple[str, Spec]]:
    """(test_group, spec) for every test user and group of TEST_GROUPS, from the test split."""
    rng, users = ctx.rng("test_prompts"), ctx.users()
    if ctx.config.test_max_users and ctx.config.test_max_users < len(users):
        users = sorted(int(u) for u in rng.choice(users, size=ctx.config.test_max_users, replace=False))
    out = []
    for group, task, m, k in TEST_GROUPS:
        for user in users:
            k_user = k if k is not None else int(rng.integers(11, 16))
            spec = ctx.user_spec("test_prompts", group, task, user, "test", rng, k_user, m)
            out += [(group, spec)] if spec is not None else []
    return out
