"""The answer format, both ways: a numbered list of titles (`format_item_list`) and back (`parse_lines`).

One writer and one parser serve the SFT labels (stage 03), the rewards (stage 05) and the
evaluation (stage 06), so an answer means the same list everywhere. `normalise_title` is the key
`recnb.catalog.Catalog` matches titles by.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_LINE = re.compile(r"[^\r\n]+")
_BULLET = re.compile(r"[-*•·▪‣]\s+")
# "1." / "1)" / "1 -" / "#1." at the start of a line; "1.5" is a number, not numbering.
_NUMBER = re.compile(r"#?\d{1,6}(?:[.)](?!\d)|\s*[-–—](?=\s))\s*")
_QUOTE_PAIRS = (('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("`", "`"), ("**", "**"))
_APOSTROPHES = re.compile(r"['’‘`]")
_PUNCT = re.compile(r"[\W_]+")


def format_item_list(titles: Sequence[str]) -> str:
    """The answer text: `1. A\\n2. B` (titles unquoted, no trailing newline; the chat template adds EOS)."""
    return "\n".join(f"{i}. {t}" for i, t in enumerate(titles, start=1))


@dataclass(frozen=True)
class ParsedLine:
    """One list entry of a generated text.

    Attributes:
        title: The entry without numbering, bullet, surrounding quotes or whitespace.
        start: Offset in the text of the title's first character.
        end: Offset just past the title's last character (PPO puts the item reward on the
            token holding character `end - 1`).
        numbered: Whether the line carried a number or bullet.
    """

    title: str
    start: int
    end: int
    numbered: bool


def parse_lines(text: str) -> list[ParsedLine]:
    """Split generated text into list entries with their character spans.

    Empty lines are dropped; when some lines are numbered (or bulleted), lines without a number
    are chatter ("Here are 10 movies:") and are dropped too. Never raises on any `str`.
    """
    if not isinstance(text, str):
        return []
    lines = [_parse_line(m.group(), m.start()) for m in _LINE.finditer(text)]
    lines = [line for line in lines if line.title]
    if any(line.numbered for line in lines):
        lines = [line for line in lines if line.numbered]
    return lines


def parse_titles(text: str) -> list[str]:
    """Titles of a generated list, one per entry, in output order (see `parse_lines`)."""
    return [line.title for line in parse_lines(text)]


def _parse_line(line: str, offset: int) -> ParsedLine:
    start, end = 0, len(line)
    while start < end and line[start].isspace():
        start += 1
    numbered = False
    for pattern in (_BULLET, _NUMBER):
        m = pattern.match(line, start)
        if m:
            start, numbered = m.end(), True
    while end > start and line[end - 1].isspace():
        end -= 1
    start, end = _strip_quotes(line, start, end)
    return ParsedLine(line[start:end], offset + start, offset + end, numbered)


def _strip_quotes(line: str, start: int, end: int) -> tuple[int, int]:
    """Drop matching quote pairs around a title (only pairs: "'Til There Was You" keeps its ')."""
    changed = True
    while changed:
        changed = False
        for left, right in _QUOTE_PAIRS:
            inner = end - start - len(left) - len(right)
            if inner > 0 and line.startswith(left, start) and line.endswith(right, start, end):
                start, end, changed = start + len(left), end - len(right), True
        while start < end and line[start].isspace():
            start += 1
        while end > start and line[end - 1].isspace():
            end -= 1
    return start, end


def normalise_title(title: str) -> str:
    """Matching key of a title: NFKC, case-folded, apostrophes dropped, other punctuation -> space.

    "Don't Look Now (1973)" and "dont look now 1973" share the key "dont look now 1973".
    """
    text = unicodedata.normalize("NFKC", title).casefold()
    text = _APOSTROPHES.sub("", text)
    return _PUNCT.sub(" ", text).strip()
