"""I4 general chat (paper §2.2.1): ShareGPT-style conversations mixed into the SFT set.

The file is a JSON list of `{"id": ..., "conversations": [{"from": "human"|"gpt"|"system",
"value": str}, ...]}` (the layout of the public ShareGPT dumps). A conversation becomes one row:
its turns up to the last assistant turn are the prompt, that turn is the completion. General chat
keeps its own system turn (if any) instead of the recommender one, because it trains general
ability, not recommending.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "chatgpt": "assistant", "bard": "assistant", "system": "system"}


def conversation_messages(conversation: Any) -> list[dict[str, str]] | None:
    """Chat messages of one ShareGPT record, or None when it is unusable (no turns, unknown role,
    empty text, or no assistant turn after a user turn)."""
    turns = conversation.get("conversations") if isinstance(conversation, dict) else None
    if not isinstance(turns, list) or not turns:
        return None
    messages = []
    for turn in turns:
        role = ROLES.get(str(turn.get("from", "")).lower()) if isinstance(turn, dict) else None
        text = turn.get("value") if isinstance(turn, dict) else None
        if role is None or not isinstance(text, str) or not text.strip():
            return None
        messages.append({"role": role, "content": text})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # a trailing user turn has no answer to learn
    if not any(m["role"] == "user" for m in messages[:-1]):
        return None
    return messages


def load_sharegpt(path: str | Path, n: int, rng: np.random.Generator) -> tuple[list[dict[str, Any]], Counter]:
    """Up to n I4 rows drawn without replacement from a ShareGPT-style JSON file.

    Returns:
        The rows (CONTRACTS.md fields; intent, k and target null) and skip counts by reason
        (`bad_conversation`, `sharegpt_short` when the file holds fewer than n usable ones).

    Raises:
        FileNotFoundError / ValueError: one line naming the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sharegpt_path {path} does not exist; set it to a ShareGPT JSON file or to ''")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected a list of {{'conversations': [...]}}") from None
    if not isinstance(records, list):
        raise TypeError(f"{path}: expected a JSON list of conversations, got {type(records).__name__}")
    skips: Counter = Counter()
    usable = []
    for record in records:
        messages = conversation_messages(record)
        if messages is None:
            skips["bad_conversation"] += 1
        else:
            usable.append(messages)
    if n > len(usable):
        skips["sharegpt_short"] += n - len(usable)
    picked = rng.choice(len(usable), size=min(n, len(usable)), replace=False) if usable else []
    return [_row(usable[int(j)]) for j in picked], skips


def _row(messages: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "task": "I4", "user_id": None, "split": "train", "candidates": None,
        "prompt": messages[:-1], "completion": messages[-1]["content"], "k": None,
        "intent": None, "target": None, "history": [], "label": [],
    }
