"""Language models built in code, for tests and for the tiny world (no download, no Hub).

- `tiny-random`: a 2-layer, 32-wide Llama on SmolLM2's tokenizer (49k tokens): what unit tests use
  to exercise the code paths; too small for its vocabulary to learn anything.
- `tiny-llama`: a 4-layer, 128-wide Llama (about a million weights) on a byte-level BPE tokenizer
  fitted to the tiny world's prompts and titles (`recnb.tiny_world`, `recnb.prompts`), each fixed
  piece of a template one token, with SmolLM2's special tokens and chat format: the tiny batch's
  LLM, which learns the world in minutes.

`train_tokenizer` and `tiny_llama` also build other small worlds (`recnb.ppo.toy`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from recnb import prompts, tiny_world
from recnb.answer import format_item_list

TINY_LLAMA_SIZE = {"hidden": 128, "layers": 4, "heads": 4}
TINY_LLAMA_VOCAB = 1024  # BPE: 256 bytes + 3 special tokens + merges (the corpus uses ~580); then the phrases


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def train_tokenizer(texts: list[str], vocab_size: int = 512, phrases: Sequence[str] = ()) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer fitted to `texts`, with SmolLM2's special tokens and chat format.

    Byte-level, so any string encodes and decodes back exactly (offsets included), while the words
    of `texts` become one or two tokens: a small model then spends its capacity on the task, not on
    spelling. The same texts give the same vocabulary (tokenizers' BPE trainer is deterministic).
    Each of `phrases` (a template's fixed text) becomes one token of its own, matched before BPE
    wherever it occurs; `vocab_size` counts the BPE part only.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(_SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.add_tokens([AddedToken(p, normalized=False) for p in phrases])
    tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_llama(tokenizer: PreTrainedTokenizerBase, *, hidden: int = 64, layers: int = 2, heads: int = 4,
               seed: int = 0) -> PreTrainedModel:
    """A small Llama sized for a small vocabulary, seeded without touching the caller's RNG."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(heads // 2, 1), head_dim=hidden // heads,
        max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id, cfg.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    return model.eval()


def tiny_random_model(tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """2 layers, hidden 32, tied embeddings: ~1.6M parameters, built in ~0.1 s."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    # fork_rng: the same seed gives the same weights without disturbing the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def list_markup_phrases(max_line: int = 30) -> list[str]:
    """The markup around titles, one token each: a history's separator `', '`, a list's line numbers
    `1.` to `max_line.`, and each later line's break with its number, `\n2.` to `\nmax_line.` (a title
    then costs 4 tokens in a history and 4 on an answer line, not 5 and 6)."""
    separator = prompts.quote_titles(["", ""])[1:-1]  # "', '": what stands between two quoted titles
    return [separator, *(f"{i}." for i in range(1, max_line + 1)), *(f"\n{i}." for i in range(2, max_line + 1))]


def tiny_world_corpus(n: int = 600, seed: int = 0) -> list[str]:
    """Texts like the tiny batch's prompts and answers (every template, intention phrase, title and
    category), from which `tiny_world_tokenizer` learns its merges."""
    rng = random.Random(seed)
    titles = [t for t, _ in tiny_world.catalog_titles()]
    texts = [prompts.SYSTEM_PROMPT, *tiny_world.vocabulary(), "system", "user", "assistant"]  # the chat roles
    tasks = ("I0", "I1+C", "I1-C", "I2<=", "I2>=", "I2~=", "I3+C", "I3-C")
    for i in range(n):
        task, k = tasks[i % len(tasks)], rng.randint(1, 15)
        category = rng.choice(tiny_world.GENRES) if task != "I0" else None
        m = rng.choice((0.1, 0.2, 0.3, 0.5, 0.7, 0.9)) if task.startswith("I2") else None
        candidates = rng.sample(titles, 20) if not task.startswith("I2") and rng.random() < 0.25 else None
        texts.append(prompts.render_instruction(task, k, rng.sample(titles, rng.randint(1, 10)), category, m,
                                                candidates, rng.randrange(6)))
        texts.append(format_item_list(rng.sample(titles, k)))
    return texts


@functools.lru_cache(maxsize=1)
def tiny_world_tokenizer() -> PreTrainedTokenizerBase:
    """The tokenizer of `tiny-llama` (the same merges in every process: a fixed corpus and trainer).

    The templates' fixed phrases are one token each (`prompts.template_phrases`), and so is the list
    markup (`list_markup_phrases`): the tiny batch's SFT records (seed 0) average 78 tokens, against
    152 with neither, 96 with the phrases only and 83 without the line breaks, and an answer 27
    tokens, against 39 and 32; so SFT's epochs and every generated list cost less.
    """
    return train_tokenizer(tiny_world_corpus(), vocab_size=TINY_LLAMA_VOCAB,
                           phrases=prompts.template_phrases() + list_markup_phrases())

