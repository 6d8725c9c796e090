"""Catalog-constrained decoding: the automaton by hand, then a random model that can only write titles."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from recnb.evaluation import constrained

SUFFIX = "<|im_start|>assistant\n"
TITLES = ["Star Wars (1977)", "Star Trek (1979)", "Star", "Heat (1995)", "Fargo (1996)", "Babe (1995)",
          "Toy Story (1995)", "Casino (1995)", "Twister (1996)", "Clerks (1994)", "Ed Wood (1994)", "Up (2009)"]
IDS = list(range(1, len(TITLES) + 1))


@pytest.fixture(scope="module")
def tok():
    from recnb import llm

    return llm.load_tokenizer("tiny-random")  # the SmolLM2 tokenizer, left padding, pad != EOS


def _constraint(tok, max_new_tokens=60, forbid_repeats=True):
    return constrained.CatalogConstraint(tok, IDS, TITLES, generation_suffix=SUFFIX,
                                         eos_token_ids=[tok.eos_token_id], max_new_tokens=max_new_tokens,
                                         forbid_repeats=forbid_repeats)


def _prompt(tok, text):
    msgs = [{"role": "system", "content": "You are an expert recommender engine."}, {"role": "user", "content": text}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def test_trie_counts_and_min_rest(tok):
    root = constrained.build_trie(tok, IDS, TITLES)
    assert sorted(root.items) == IDS
    star = root.children[tok.encode("1. Star", add_special_tokens=False)[-1]]
    assert star.item == 3 and sorted(star.items) == [1, 2, 3]  # "Star" ends here, two titles continue
    assert star.min_rest == 0
    assert len(constrained.title_token_ids(tok, "Up (2009)")) == 7  # " Up", " (", 4 digits, ")"
    assert root.min_rest == 1  # the shortest title, "Star", is one token


def test_automaton_walks_one_line_and_forbids_repeat(tok):
    c = _constraint(tok)
    key = c._prompt_key(tok.encode(_prompt(tok, "hi"), add_special_tokens=False))
    assert c.allowed_tokens(key, []) == tok.encode("1", add_special_tokens=False)  # forced number, no EOS yet
    line = tok.encode("1. Star", add_special_tokens=False)
    allowed = c.allowed_tokens(key, line)
    assert tok.encode("\n", add_special_tokens=False)[0] in allowed and tok.eos_token_id in allowed
    gen = tok.encode("1. Heat (1995)\n2. Star", add_special_tokens=False)
    assert c.allowed_tokens(key, gen)[-1] == tok.eos_token_id
    # after "Heat" was listed, the branch " Heat" is dead at the next title start
    at_title = c.allowed_tokens(key, tok.encode("1. Heat (1995)\n2.", add_special_tokens=False))
    assert constrained.title_token_ids(tok, "Heat (1995)")[0] not in at_title
    assert constrained.title_token_ids(tok, "Fargo (1996)")[0] in at_title


def test_registered_history_is_forbidden_and_budget_respected(tok):
    c = _constraint(tok, max_new_tokens=12)
    text = _prompt(tok, "history: Fargo (1996)")
    c.register([text], [[5]])
    key = c._prompt_key(tok.encode(text, add_special_tokens=False))
    start = c.allowed_tokens(key, tok.encode("1.", add_special_tokens=False))
    assert constrained.title_token_ids(tok, "Fargo (1996)")[0] not in start
    # after a 10-token first line 2 tokens are left: even "2. Star" (3 tokens) does not fit -> EOS only
    gen = tok.encode("1. Up (2009)\n", add_special_tokens=False)
    assert len(gen) == 10 and c.allowed_tokens(key, gen) == [tok.eos_token_id]


def test_registered_k_ends_the_answer_after_k_lines(tok):
    c = _constraint(tok, max_new_tokens=200)
    text = _prompt(tok, "two items please")
    c.register([text], [[]], max_items=[2])
    key = c._prompt_key(tok.encode(text, add_special_tokens=False))
    one = tok.encode("1. Up (2009)\n", add_special_tokens=False)
    assert c.allowed_tokens(key, one) == tok.encode("2", add_special_tokens=False) + [tok.eos_token_id]
    two = tok.encode("1. Up (2009)\n2. Heat (1995)\n", add_special_tokens=False)
    assert c.allowed_tokens(key, two) == [tok.eos_token_id]


def test_random_model_writes_only_catalog_titles(tok):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    prompts = [_prompt(tok, f"user {u}: recommend 5 movies") for u in range(4)]
    c = _constraint(tok, max_new_tokens=40)
    c.register(prompts, [[1], [2], [4], []])
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        free = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
        out = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id,
                             logits_processor=LogitsProcessorList([c]))
    free_text = tok.batch_decode(free[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert not any(t.startswith("1. ") for t in free_text)  # the random model alone writes no list
    texts = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    for row, (text, banned) in enumerate(zip(texts, [1, 2, 4, None])):
        lines = [ln for ln in text.split("\n") if ln]
        assert lines, f"row {row} wrote nothing"
        titles = [ln.split(". ", 1)[1] for ln in lines]
        assert [ln.split(".", 1)[0] for ln in lines] == [str(i) for i in range(1, len(lines) + 1)]
        assert all(t in TITLES for t in titles), text  # NonExist = 0
        assert len(set(titles)) == len(titles)  # no repeats
        if banned:
            assert TITLES[banned - 1] not in titles
    assert c.unmatched_prompts == 0


def test_constraint_reads_prompts_whose_shared_prefix_is_padded_apart_from_their_tail(tok):
    """`llm.generate` prefills a shared prompt prefix once and pads between it and each tail: the
    constraint still finds each prompt's forbidden items, and the lists equal those of whole prompts."""
    from recnb import llm

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    texts = [f"user {u}: recommend {k} movies" + " please" * len(str(u)) for u, k in ((1, 5), (22, 4), (333, 3), (4, 5))]
    texts.append("Something else entirely, " * 12 + "recommend 3 movies")  # shares too little: prefilled whole
    messages = [[{"role": "system", "content": "You are an expert recommender engine."}, {"role": "user", "content": t}]
                for t in texts]
    rendered = llm.render_prompts(tok, messages, 512)
    families = llm.prefix_families([tok(r, add_special_tokens=False)["input_ids"] for r in rendered])
    # one prefix with four tails of different lengths; the other prompt alone, its tail its last token
    # (inside the generation marker, which the padding then splits)
    assert sorted(len(m) for _, m in families) == [1, 4]
    answers = {}
    for share in (True, False):
        c = _constraint(tok, max_new_tokens=40)
        c.register(rendered, [[1], [2], [4], [], [7]])
        how = llm.Decoding(max_new_tokens=40, batch_size=5, share_prefixes=share)
        answers[share] = llm.generate(model, tok, messages, how, logits_processor=LogitsProcessorList([c]), progress=False)
        assert c.unmatched_prompts == 0
    assert answers[True] == answers[False]
    for text, banned in zip(answers[True], [1, 2, 4, None, 7], strict=True):
        titles = [ln.split(". ", 1)[1] for ln in text.split("\n") if ln]
        assert titles and all(t in TITLES for t in titles) and len(set(titles)) == len(titles)
        assert banned is None or TITLES[banned - 1] not in titles


def test_a_line_break_read_with_its_number_as_one_token_starts_the_next_line():
    """tiny-llama reads "\\n2." as one token: after a title the automaton offers it (and EOS), while
    the registered k lasts and a title still fits; a random tiny model writes only catalog lists."""
    from recnb import llm, tiny_world

    tok = llm.load_tokenizer(llm.TINY_LLAMA)
    titles = [t for t, _ in tiny_world.catalog_titles()][:12]
    ids = list(range(1, len(titles) + 1))
    c = constrained.CatalogConstraint(tok, ids, titles, generation_suffix=SUFFIX, eos_token_ids=[tok.eos_token_id],
                                      max_new_tokens=40)
    assert c.line_start_ids(2) == tok.encode("\n2.", add_special_tokens=False) and len(c.line_start_ids(2)) == 1
    text = _prompt(tok, "three please")
    c.register([text], [[]], max_items=[3])
    key = c._prompt_key(tok.encode(text, add_special_tokens=False))
    one = tok.encode(f"1. {titles[0]}", add_special_tokens=False)
    assert c.allowed_tokens(key, one) == c.line_start_ids(2) + [tok.eos_token_id]
    two = tok.encode(f"1. {titles[0]}\n2.", add_special_tokens=False)
    assert len(two) == len(one) + 1  # the break and the number: one step of the automaton
    first = constrained.title_token_ids(tok, titles[0])
    assert first[0] in c.allowed_tokens(key, two)  # its first word also starts other titles
    assert first[-1] not in c.allowed_tokens(key, two + first[:-1])  # but the title itself may not repeat
    three = tok.encode(f"1. {titles[0]}\n2. {titles[1]}\n3. {titles[2]}", add_special_tokens=False)
    assert c.allowed_tokens(key, three) == [tok.eos_token_id]  # k = 3 reached: no "\n4."
    tight = constrained.CatalogConstraint(tok, ids, titles, generation_suffix=SUFFIX,
                                          eos_token_ids=[tok.eos_token_id], max_new_tokens=len(one) + 3)
    # 3 tokens left: "\n2." and a 3-token title do not fit, so the answer may only end
    assert tight.allowed_tokens(key, one) == [tok.eos_token_id]

    model, _ = llm.load_base(llm.TINY_LLAMA, seed=0)
    prompts = [_prompt(tok, f"user {u}: recommend movies") for u in range(3)]
    c = constrained.CatalogConstraint(tok, ids, titles, generation_suffix=SUFFIX, eos_token_ids=[tok.eos_token_id],
                                      max_new_tokens=30)
    c.register(prompts, [[1], [], [2]], max_items=[4, 4, 4])
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=30, do_sample=False, pad_token_id=tok.pad_token_id,
                             logits_processor=LogitsProcessorList([c]))
    for text, banned in zip(tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True), [1, None, 2]):
        lines = text.split("\n")
        assert 1 <= len(lines) <= 4 and [ln.split(". ", 1)[0] for ln in lines] == [str(i) for i in range(1, len(lines) + 1)]
        listed = [ln.split(". ", 1)[1] for ln in lines]
        assert all(t in titles for t in listed) and len(set(listed)) == len(listed), text
        assert banned is None or titles[banned - 1] not in listed


@pytest.mark.slow  # real SmolLM2-135M weights, ~1 min on one core
def test_smollm2_constrained_lists_are_catalog_titles():
    import pandas as pd

    from recnb import data, llm
    from recnb.catalog import Catalog
    from recnb.evaluation import predict as evaluate

    items = data.build_dataset("tiny", seed=0).items
    catalog = Catalog(items)
    model, tok = llm.load_base("smollm2-135m")
    titles = items["title"].tolist()
    test = pd.DataFrame({"history": [[1, 2, 3], [4, 5, 6]], "k": [5, 5], "prompt": [
        [{"role": "system", "content": "You are an expert recommender engine."},
         {"role": "user", "content": f"Here are the user's historical interactions: {', '.join(titles[h - 1] for h in hist)}. "
                                     "You need to generate a recommendation list with 5 different items."}]
        for hist in ([1, 2, 3], [4, 5, 6])]})
    how = llm.Decoding(max_new_tokens=80, batch_size=2, max_prompt_tokens=512)
    constraint = evaluate.make_constraint(tok, items, test, how)
    raw = llm.generate(model, tok, list(test["prompt"]), how, logits_processor=LogitsProcessorList([constraint]),
                       progress=False)
    for text, hist in zip(raw, test["history"]):
        ids = catalog.match_many([line.split(". ", 1)[1] for line in text.splitlines()])
        assert 2 <= len(ids) <= 5 and None not in ids and not set(ids) & set(hist), text
