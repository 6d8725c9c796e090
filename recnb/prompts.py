"""The paper's instruction templates (appendix A.2, Listings 1-6) as data, and how they are rendered.

Every template below is the paper's text word for word. Each one opens with the sentence
"You are an expert recommender engine." (`SYSTEM_PROMPT`); rendering moves that
sentence into the chat's system message and keeps the rest as the user message, so the chat
template of whichever base model is used wraps it (the paper used Llama-2's official template).

History and candidate titles are single-quoted and comma-separated, as in the paper's case study;
the answer (`recnb.answer.format_item_list`) is `1. Title\\n2. Title...` with titles unquoted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from recnb.tasks import INTENT_KIND

SYSTEM_PROMPT = "You are an expert recommender engine."  # every template's first sentence

_I1_HEAD = (
    "You are an expert recommender engine. You need to generate a recommendation list simultaneously "
    "considering user's preference inferred from historical interactions and user's intention."
)
_I2_HEAD = (
    f"{_I1_HEAD} Here are user's historical interactions: {{history}}, and user's intention: In the "
    "recommendation list, the proportion of '{target_category}' items should be"
)
_I2_TAIL = " {category_proportion}. You need to generate a recommendation list with {item_count} different items."

# Keys: task family -> (generate-from-catalog template, select-from-candidates template or None).
TEMPLATES: dict[str, tuple[str, str | None]] = {
    "I0": (
        ("You are an expert recommender engine. You need to generate a recommendation list considering "
         "user's preference from historical interactions. The historical interactions are provided as "
         "follows: {history}. You need to generate a recommendation list with {item_count} different items."),
        ("You are an expert recommender engine. You need to select a recommendation list considering "
         "user's preference from historical interactions. The historical interactions are provided as "
         "follows: {history}. The candidate items are: {candidate_titles}. You need to select a "
         "recommendation list with {item_count} different items from candidate items."),
    ),
    "I1": (
        (f"{_I1_HEAD} If user's preference conflicts with his intention, you should comply with his "
         "intention. Here are user's historical interactions: {history}, and user's intention: "
         "{synthetic_intention}. You need to generate a recommendation list with {item_count} different items."),
        ("You are an expert recommender engine. You need to select a recommendation list from candidate "
         "items simultaneously considering user's preference inferred from historical interactions and "
         "user's intention. If user's preference conflicts with his intention, you should comply with his "
         "intention. Here are user's historical interactions: {history}, and user's intention: "
         "{synthetic_intention}. The candidate items are: {candidate_titles}. You need to select a "
         "recommendation list with {item_count} different items from candidate items."),
    ),
    # Listing 3 has no candidate variant for I2.
    "I2<=": (f"{_I2_HEAD} less than or equal to{_I2_TAIL}", None),
    "I2>=": (f"{_I2_HEAD} more than or equal to{_I2_TAIL}", None),
    "I2~=": (f"{_I2_HEAD} approximately{_I2_TAIL}", None),
    "I3": (
        ("You are an expert recommender engine. You need to generate a recommendation list complying "
         "user's intention. Here is user's intention: {synthetic_intention}. Please generate a "
         "recommendation list with {item_count} different items."),
        ("You are an expert recommender engine. You need to select a recommendation list complying user's "
         "intention from candidate items. Here is user's intention: {synthetic_intention}. The candidate "
         "items are: {candidate_titles}. Please select a recommendation list with {item_count} different "
         "items from candidate items."),
    ),
}

# Listings 5 and 6: positive and negative intentions of I1 and I3.
POSITIVE_INTENTIONS: tuple[str, ...] = (
    "I like '{target_category}' products",
    "Please recommend some '{target_category}' items",
    "I'm interested in '{target_category}'",
    "I would like to buy some '{target_category}' products",
    "I would like to browse some '{target_category}' products",
    "I prefer in '{target_category}' item",
)
NEGATIVE_INTENTIONS: tuple[str, ...] = (
    "I don't like '{target_category}' products",
    "Please exclude any '{target_category}' item",
    "I'm not interested in '{target_category}'",
    "Don't recommend me any '{target_category}' products",
    "I don't want to browse any '{target_category}' product",
    "I hate '{target_category}' items",
)



def template_phrases() -> list[str]:
    """The fixed text of every template and intention sentence, cut at its fields: a small tokenizer
    can hold each as one token (`recnb.tiny_lm`), so a small model reads a template as a few tokens.

    Each piece keeps the space before it and drops the one after it, so the field that follows
    starts with its own space, as it would inside running text. The system sentence is one piece.
    """
    pieces = {SYSTEM_PROMPT}
    for template in (t for pair in TEMPLATES.values() for t in pair if t is not None):
        pieces.update(re.split(r"\{[a-z_]+\}", template.removeprefix(SYSTEM_PROMPT).lstrip()))
    for phrase in POSITIVE_INTENTIONS + NEGATIVE_INTENTIONS:
        head, tail = phrase.split("{target_category}")
        pieces.update((" " + head, tail))  # " I hate '" follows "intention:"
    return sorted({p.rstrip() for p in pieces if len(p.strip()) >= 3})


def template_family(task: str) -> str:
    """`I1+C` -> `I1`, `I2<=` -> `I2<=`: the key of `TEMPLATES` a task uses."""
    if task not in INTENT_KIND:
        raise ValueError(f"task {task!r} has no recommendation template; tasks are {', '.join(INTENT_KIND)}")
    return task[:2] if task[:2] in ("I0", "I1", "I3") else task


def quote_titles(titles: Sequence[str]) -> str:
    """`['A', 'B']` -> `'A', 'B'` (the paper's history format)."""
    return ", ".join(f"'{t}'" for t in titles)


def format_proportion(m: float) -> str:
    """0.3 -> `30%` (the paper writes proportions as percentages, e.g. CP≈30%)."""
    return f"{round(m * 100)}%"


def intention_phrase(positive: bool, category: str, index: int) -> str:
    """One of the 6 positive / 6 negative intention sentences of Listings 5-6 for `category`."""
    phrases = POSITIVE_INTENTIONS if positive else NEGATIVE_INTENTIONS
    return phrases[index % len(phrases)].format(target_category=category)


def render_instruction(
    task: str,
    k: int,
    history: Sequence[str] = (),
    category: str | None = None,
    m: float | None = None,
    candidates: Sequence[str] | None = None,
    phrase_index: int = 0,
) -> str:
    """The full instruction text of one sample (system sentence included), from the paper's template.

    Args:
        task: one of `INTENT_KIND` (I4 has no template).
        k: the number of items asked for (`{item_count}`).
        history: titles shown as the user's history (ignored by I3).
        category: the target category of I1/I2/I3 tasks.
        m: the proportion of I2 tasks, in (0, 1).
        candidates: titles for the select-from-candidates variant; None = generate from the catalog.
        phrase_index: which of the 6 intention phrases I1/I3 use.
    """
    generate, select = TEMPLATES[template_family(task)]
    if candidates is not None and select is None:
        raise ValueError(f"task {task} has no candidate-list template in the paper (Listing 3); pass candidates=None")
    if task[:2] in ("I1", "I2", "I3") and not category:
        raise ValueError(f"task {task} needs a target category")
    if task.startswith("I2") and not (m and 0 < m < 1):
        raise ValueError(f"task {task} needs a proportion m in (0, 1), got {m!r}")
    fields = {
        "history": quote_titles(history),
        "item_count": k,
        "target_category": category,
        "category_proportion": format_proportion(m) if m else None,
        "synthetic_intention": intention_phrase(task.endswith("+C"), category, phrase_index) if category else None,
        "candidate_titles": quote_titles(candidates) if candidates is not None else None,
    }
    return (generate if candidates is None else select).format(**fields)


def chat_messages(instruction: str, system: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Split a rendered instruction into chat messages: the system sentence, then the user request.

    Raises:
        ValueError: if the instruction does not open with the system sentence.
    """
    if not instruction.startswith(system):
        raise ValueError(f"instruction does not start with the system prompt {system!r}: {instruction[:60]!r}")
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": instruction[len(system):].lstrip()},
    ]
