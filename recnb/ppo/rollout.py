"""Stage 05 rollouts: sample answers, score them with the paper's rewards, place rewards on tokens.

- `sample_rollout`: chat prompts (`recnb.llm.render_prompts`) → left-padded batch → transformers'
  `generate` (KV cache, temperature, top-k) → the **sampled token ids** we train on (the reference
  code re-rendered parsed text instead), a response mask that ends at EOS, and the decoded text.
- `token_char_ends` + `place_scores`: item i's reward goes on the token that holds the last
  character of item i's title (`recnb.answer.parse_lines` gives its span, so a line is an item
  exactly when stage 06 reads one), found through the tokenizer's offset mapping of the decoded
  response (never by counting newline ids: a newline can share a token with `)`); the scaled
  list reward goes on the final token (EOS, or the last token when truncated).
- `RecScorer`: parse → catalog ids → teacher ranks (SASRec) → `recnb.rewards.score_list`, i.e. the
  same definitions stage 06 reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recnb import answer, llm, metrics, rewards
from recnb.catalog import Catalog
from recnb.tasks import intent_of


@dataclass
class Rollout:
    """One batch of sampled answers. Tensors are `(B, P)` for the prompt, `(B, T)` for the response."""

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor  # float, 1 up to and including EOS
    texts: list[str]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask.long()], dim=1)


def response_mask(response_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1.0 on tokens up to and including the first EOS of each row, 0.0 after it."""
    is_eos = (response_ids == eos_id).long()
    after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0  # strictly after the first EOS
    return (~after_eos).float()


@torch.no_grad()
def sample_rollout(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, messages_list: list[list[dict]], *,
                   max_new_tokens: int, temperature: float = 0.7, top_k: int = 0,
                   max_prompt_tokens: int = 512, do_sample: bool = True) -> Rollout:
    """Generate one answer per conversation with the model's active adapter (sampled or greedy)."""
    texts = llm.render_prompts(tokenizer, messages_list, max_prompt_tokens)
    device = next(model.parameters()).device
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    sampling = ({"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": 1.0} if do_sample
                else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None})
    out = model.generate(**batch, max_new_tokens=max_new_tokens, use_cache=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling,
                         **llm.answer_cache(model, max_new_tokens))
    response_ids = out[:, batch["input_ids"].shape[1]:]
    mask = response_mask(response_ids, tokenizer.eos_token_id)
    decoded = [tokenizer.decode(row[: int(m.sum())], skip_special_tokens=True) for row, m in zip(response_ids, mask)]
    return Rollout(batch["input_ids"], batch["attention_mask"], response_ids, mask, decoded)


def token_char_ends(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], text: str) -> list[int]:
    """End offset (exclusive) in `text` of each response token in `ids` (`text` = their decoding).

    Uses the fast tokenizer's offset mapping of `text` when re-encoding reproduces the sampled ids
    (the usual case). Sampled ids can be a non-canonical split of the same text; then the ends come
    from decoding growing prefixes, which is exact for any split. Special tokens (EOS) end at `len(text)`.
    """
    ids = list(ids)
    special = set(tokenizer.all_special_ids)
    plain = [i for i in ids if i not in special]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if enc["input_ids"] == plain:
        plain_ends = iter(end for _, end in enc["offset_mapping"])
        return [len(text) if i in special else next(plain_ends) for i in ids]
    ends, prefix = [], []
    for i in ids:
        if i not in special:
            prefix.append(i)
        ends.append(len(tokenizer.decode(prefix, skip_special_tokens=True)) if i not in special else len(text))
    return ends


def place_scores(char_ends: Sequence[int], item_ends: Sequence[int], item_rewards: Sequence[float],
                 list_reward: float, length: int) -> torch.Tensor:
    """Scores on response tokens: each item reward on its line's last token, `list_reward` on token `length - 1`.

    Args:
        char_ends: end offset of each real response token (`token_char_ends`).
        item_ends: end offset of each item's title (`ParsedLine.end`), one per item reward.
        item_rewards: R_item per item (pass zeros for the list-only variant).
        list_reward: the already scaled R_list.
        length: number of real response tokens (EOS included).
    """
    return place_on_tokens(item_end_tokens(char_ends, item_ends, length), item_rewards, list_reward, length)


def place_on_tokens(item_tokens: Sequence[int], item_rewards: Sequence[float], list_reward: float,
                    length: int) -> torch.Tensor:
    """Scores `(length,)`: each item reward on its end token, `list_reward` on the last real token."""
    score = torch.zeros(length)
    for token, reward in zip(item_tokens, item_rewards, strict=True):
        score[token] += reward
    if length:
        score[length - 1] += list_reward
    return score


def item_end_tokens(char_ends: Sequence[int], item_ends: Sequence[int], length: int) -> list[int]:
    """Index of the token that holds each item's last character (the first token ending at or past it;
    the last real token when the text was cut). PPO pays R_item there; GRPO's item credit spans from the
    token after the previous item's to it (`recnb.ppo.grpo`)."""
    return [next((t for t, e in enumerate(char_ends[:length]) if e >= end), length - 1) for end in item_ends]


def answer_items(rollout: Rollout, row: int, tokenizer: PreTrainedTokenizerBase) -> tuple[list, list[int], int]:
    """(parsed lines, each line's end token, number of real tokens) of one sampled answer."""
    length = int(rollout.response_mask[row].sum())
    ids = rollout.response_ids[row, :length].tolist()
    text = rollout.texts[row]
    lines = answer.parse_lines(text)
    ends = token_char_ends(tokenizer, ids, text)
    return lines, item_end_tokens(ends, [line.end for line in lines], length), length


class ScoreLike(Protocol):
    """What a scorer returns: `recnb.rewards.ListScore` or any object with these fields."""

    legal: Sequence[bool]
    item_rewards: Sequence[float]
    list_reward: float


Scorer = Callable[[dict, list[str]], ScoreLike]


def score_rollout(rollout: Rollout, records: list[dict], tokenizer: PreTrainedTokenizerBase, scorer: Scorer, *,
                  item_rewards: bool, list_reward_scale: float) -> tuple[torch.Tensor, list[ScoreLike]]:
    """Per-token score tensor `(B, T)` for a rollout and each answer's ListScore.

    Args:
        item_rewards: False for the paper's v3 (`reward: list`): only the list reward is paid.
    """
    scores = torch.zeros_like(rollout.response_mask)
    results = []
    for row, record in enumerate(records):
        lines, tokens, length = answer_items(rollout, row, tokenizer)
        result = scorer(record, [line.title for line in lines])
        rewards = list(result.item_rewards) if item_rewards else [0.0] * len(lines)
        scores[row, :length] = place_on_tokens(tokens, rewards, list_reward_scale * result.list_reward, length)
        results.append(result)
    return scores, results


class RecScorer:
    """The paper's rewards for one generated list: catalog match, teacher ranks, `score_list`.

    Args:
        catalog: `recnb.catalog.Catalog` of stage 01's items.
        teacher: stage 02's SASRec (`recnb.sasrec.load_sasrec`).
        fuzzy: the title matcher (the same setting stage 06 uses).
        control_weight: `score_list`'s weight of the control scores (paper: 0.5).
    """

    def __init__(self, catalog: Catalog, teacher, fuzzy: bool = False, control_weight: float = 0.5):
        self.catalog, self.teacher, self.fuzzy, self.control_weight = catalog, teacher, fuzzy, control_weight

    def items(self, titles: list[str]) -> list[int | None]:
        """Catalog ids of parsed titles (None = not in the catalog)."""
        return self.catalog.match_many(titles, fuzzy=self.fuzzy)

    def __call__(self, record: dict, titles: list[str]) -> rewards.ListScore:
        """`score_list` of the titles for this prompt (history = the ids shown in the prompt)."""
        from recnb import sasrec

        items = self.items(titles)
        known = sorted({i for i in items if i is not None})
        ranks = sasrec.teacher_rank(self.teacher, record["history"], known) if known else []
        intent = intent_of(record)
        return rewards.score_list(
            items, k=int(record["k"]), target=record.get("target"), history=record["history"],
            rank=dict(zip(known, (int(r) for r in ranks))), intent=intent,
            category_items=self.catalog.items_in(intent.category) if intent.category else frozenset(),
            control_weight=self.control_weight,
        )

    def measure(self, record: dict, titles: list[str]) -> dict:
        """Stage 06's per-list metric row (`recnb.metrics.score_answer`) for these titles."""
        return metrics.score_answer(record, titles, self.catalog, fuzzy=self.fuzzy)
