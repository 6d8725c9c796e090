"""Catalog-constrained decoding (beyond the paper): the model may only write `N. <catalog title>` lines.

A token trie over the tokenised catalog titles drives a `LogitsProcessor`: at each step every row of
the batch is replayed through a small automaton (line start -> title trie -> next line start or EOS)
and all tokens the automaton cannot take are masked to -inf. A line starts with its number, `1.`,
and every later one with the break before it, `\n2.`, tokenised as the tokenizer writes it: a newline
token then the number (SmolLM2), or one token for both (tiny-llama's list markup). Hence every complete line is a catalog
title and NonExist = 0 by construction. Optionally, items already written (repeats) and the items
shown in the prompt (history, registered per prompt) are forbidden too, and a registered prompt's
answer ends after the k lines it asked for.

Why a LogitsProcessor and not `prefix_allowed_tokens_fn`: the processor sees the whole batch, so
the mask is built with one tensor op per step; `allowed_tokens` offers the per-row function form.

The automaton also knows the generation budget (`max_new_tokens`): a new line or a title branch is
only allowed when a complete title still fits, so no list ends in a cut-off (non-existent) title.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor

_NUM_PREFIX = "1."  # how a line starts; its tokenisation decides how titles are tokenised after it


@dataclass
class TrieNode:
    """One node of the title trie: children by token id, the item ending here, subtree facts."""

    children: dict[int, TrieNode] = field(default_factory=dict)
    item: int | None = None  # item id whose title ends exactly here
    items: list[int] = field(default_factory=list)  # every item in this subtree
    min_rest: int = 0  # fewest further tokens to reach a complete title

    def alive(self, forbidden: set[int]) -> bool:
        """True when some item of the subtree is not forbidden."""
        return len(self.items) > len(forbidden) or any(i not in forbidden for i in self.items)


def title_token_ids(tokenizer, title: str) -> list[int]:
    """Tokens of a title as it appears after the line number (`1. Title`), no special tokens."""
    prefix = tokenizer.encode(_NUM_PREFIX, add_special_tokens=False)
    full = tokenizer.encode(f"{_NUM_PREFIX} {title}", add_special_tokens=False)
    if full[: len(prefix)] == prefix and len(full) > len(prefix):
        return full[len(prefix):]
    return tokenizer.encode(" " + title, add_special_tokens=False)


def build_trie(tokenizer, item_ids: Sequence[int], titles: Sequence[str]) -> TrieNode:
    """Token trie over catalog titles; a title that tokenises like an earlier one keeps the first id."""
    root = TrieNode()
    for item, title in zip(item_ids, titles):
        node = root
        node.items.append(int(item))
        for tok in title_token_ids(tokenizer, str(title)):
            node = node.children.setdefault(tok, TrieNode())
            node.items.append(int(item))
        if node.item is None:
            node.item = int(item)
    _set_min_rest(root)
    return root


def _set_min_rest(root: TrieNode) -> None:
    """Post-order pass (iterative: titles can be long) filling `min_rest`."""
    stack, order = [root], []
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children.values())
    for node in reversed(order):
        rests = [1 + c.min_rest for c in node.children.values()]
        node.min_rest = 0 if node.item is not None else min(rests, default=10**9)


@dataclass
class _RowState:
    line: int = 1  # 1-based number of the line being written
    pos: int = 0  # tokens of the line's start (`line_start_ids`) written so far
    node: TrieNode | None = None  # None while writing the line's start
    used: frozenset = frozenset()  # items already listed
    done: bool = False


class CatalogConstraint(LogitsProcessor):
    """Logits processor that only lets the model write numbered catalog titles.

    Args:
        tokenizer: the model's tokenizer.
        item_ids: catalog item ids, aligned with `titles`.
        titles: catalog titles.
        generation_suffix: text the chat template appends for the answer (e.g.
            `"<|im_start|>assistant\\n"`); generated tokens are those after its last occurrence.
        eos_token_ids: tokens that end an answer (allowed at line boundaries).
        max_new_tokens: the generation budget, so the last title is never cut off.
        forbid_repeats: forbid items already listed in the same answer.
    """

    def __init__(self, tokenizer, item_ids: Sequence[int], titles: Sequence[str], *,
                 generation_suffix: str, eos_token_ids: Iterable[int], max_new_tokens: int,
                 forbid_repeats: bool = True) -> None:
        self.tokenizer = tokenizer
        self.root = build_trie(tokenizer, item_ids, titles)
        self.newline = tokenizer.encode("\n", add_special_tokens=False)
        if len(self.newline) != 1:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} splits '\\n' into {len(self.newline)} tokens; "
                             "constrained decoding needs a single newline token")
        self.newline = self.newline[0]
        self.marker = tokenizer.encode(generation_suffix, add_special_tokens=False)
        self.eos = sorted({int(e) for e in eos_token_ids if e is not None})
        self.max_new_tokens = int(max_new_tokens)
        self.forbid_repeats = forbid_repeats
        self.pad_id = tokenizer.pad_token_id
        self._line_starts: dict[int, list[int]] = {}
        self._forbidden: dict[tuple, frozenset] = {}
        self._limits: dict[tuple, int] = {}
        self._states: dict[tuple, _RowState] = {}
        self.unmatched_prompts = 0  # rows whose prompt was never registered (no history forbidding)

    def register(self, rendered_prompts: Sequence[str], forbidden_items: Sequence[Iterable[int]],
                 max_items: Sequence[int] | None = None) -> None:
        """Per-prompt rules, prompts as rendered by the chat template (what `generate` tokenises).

        Args:
            rendered_prompts: the chat-template text of each prompt.
            forbidden_items: items each answer may not list (e.g. its history).
            max_items: the k each prompt asks for: after k lines only EOS is allowed.
        """
        limits = max_items if max_items is not None else [None] * len(rendered_prompts)
        for text, items, limit in zip(rendered_prompts, forbidden_items, limits, strict=True):
            key = self._prompt_key(self.tokenizer.encode(text, add_special_tokens=False))
            self._forbidden[key] = frozenset(int(i) for i in items)
            if limit is not None:
                self._limits[key] = int(limit)

    def _prompt_key(self, ids: Sequence[int]) -> tuple:
        start = 0
        specials = {self.pad_id, self.tokenizer.bos_token_id} - {None}
        while start < len(ids) and ids[start] in specials:
            start += 1
        return tuple(ids[start:])

    def line_start_ids(self, line: int) -> list[int]:
        """Tokens that start line `line`: `1.` for the first, the break and number (`\n2.`) after (cached)."""
        if line not in self._line_starts:
            text = f"{line}." if line == 1 else f"\n{line}."
            self._line_starts[line] = self.tokenizer.encode(text, add_special_tokens=False)
        return self._line_starts[line]

    def _number_from(self, line: int) -> int:
        """Where the number begins in `line_start_ids(line)`: 1 after a newline token of its own, else 0.
        A row that has begun the number goes on with it, whatever the budget."""
        start = self.line_start_ids(line)
        return 1 if line > 1 and len(start) > 1 and start[0] == self.newline else 0

    def _split(self, ids: list[int]) -> tuple[list[int], list[int]]:
        m = len(self.marker)
        for end in range(len(ids), m - 1, -1):
            if ids[end - m:end] == self.marker:
                return ids[:end], ids[end:]
        raise ValueError("generation prompt marker not found in the input; pass the chat template's "
                         "generation suffix as `generation_suffix`")

    def _advance(self, state: _RowState, tok: int) -> _RowState:
        """The automaton's step; an unexpected token (never allowed) ends the row."""
        if state.done or tok in self.eos:
            return _RowState(state.line, state.pos, state.node, state.used, True)
        if state.node is None:
            expected = self.line_start_ids(state.line)
            if tok != expected[state.pos]:
                return _RowState(state.line, state.pos, None, state.used, True)
            if state.pos + 1 == len(expected):
                return _RowState(state.line, 0, self.root, state.used)
            return _RowState(state.line, state.pos + 1, None, state.used)
        following = self.line_start_ids(state.line + 1)
        if tok == following[0] and state.node.item is not None:
            used = state.used | {state.node.item}
            if len(following) == 1:
                return _RowState(state.line + 1, 0, self.root, used)
            return _RowState(state.line + 1, 1, None, used)
        child = state.node.children.get(tok)
        if child is None:
            return _RowState(state.line, state.pos, state.node, state.used, True)
        return _RowState(state.line, state.pos, child, state.used)

    def _state(self, prompt_key: tuple, gen: list[int], previous: dict) -> _RowState:
        key = (prompt_key, tuple(gen))
        state = previous.get(key)
        if state is not None:
            return state
        if gen:
            state = self._advance(self._state(prompt_key, gen[:-1], previous), gen[-1])
        else:
            state = _RowState()
        previous[key] = state
        return state

    def allowed_tokens(self, prompt_key: tuple, gen: list[int], states: dict | None = None) -> list[int] | None:
        """Tokens allowed after `gen` (generated ids) for a prompt; None = no constraint (finished row)."""
        state = self._state(prompt_key, gen, self._states if states is None else states)
        if state.done:
            return None
        forbidden = self._forbidden.get(prompt_key, frozenset())
        if self.forbid_repeats:
            forbidden = forbidden | state.used
        budget = self.max_new_tokens - len(gen)
        if state.node is None:
            start, number_from = self.line_start_ids(state.line), self._number_from(state.line)
            fits = self._line_fits(state.line, state.pos, budget, prompt_key)
            can_end = state.line > 1 and state.pos == number_from  # after a bare line break
            allowed = [start[state.pos]] if fits or state.pos > number_from else []
            return allowed + (self.eos if can_end or not allowed else [])
        allowed = [t for t, c in state.node.children.items() if 1 + c.min_rest <= budget and c.alive(forbidden)]
        if state.node.item is not None and state.node.item not in forbidden:
            # a newline token of its own is always allowed (then EOS, or the number if the line fits);
            # a break merged with the number only where the next line fits
            nxt = state.line + 1
            if self._number_from(nxt) or self._line_fits(nxt, 0, budget, prompt_key):
                allowed.append(self.line_start_ids(nxt)[0])
            allowed += self.eos
        return allowed or self.eos  # a dead end (only forbidden completions fit): stop the answer

    def _line_fits(self, line: int, pos: int, budget: int, prompt_key: tuple) -> bool:
        """Whether line `line`, from token `pos` of its start, can still be completed with a title within
        `budget` tokens, and is within the prompt's registered k."""
        rest = len(self.line_start_ids(line)) - pos + self.root.min_rest
        return rest <= budget and line <= self._limits.get(prompt_key, line)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        states: dict = {}
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids.tolist()):
            # padding says nothing: `llm.generate` may pad a prompt between its shared prefix and its tail
            # (even inside the generation marker; only where pad is not EOS), and feeds a finished row pads
            prompt, gen = self._split(ids if self.pad_id in self.eos else [t for t in ids if t != self.pad_id])
            key = self._prompt_key(prompt)
            if key not in self._forbidden and not gen:
                self.unmatched_prompts += 1
            allowed = self.allowed_tokens(key, gen, self._states)
            states[(key, tuple(gen))] = self._states[(key, tuple(gen))]
            if allowed is None:
                mask[row] = 0.0
            else:
                mask[row, allowed] = 0.0
        self._states = states  # keep only the current step: the next step extends these
        return scores + mask
