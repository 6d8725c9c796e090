"""The tiny world (recnb.tiny_world) and its language model (recnb.tiny_lm): seeded, with the signal
the miniature needs, and a tokenizer that suits it."""

import itertools

import pandas as pd
import torch

from recnb import data, llm, prompts, tiny_lm, tiny_world
from recnb.answer import format_item_list


def test_the_tiny_world_is_seeded_and_titles_carry_their_category():
    inter, items = tiny_world.make_tiny(seed=0)
    again, same = tiny_world.make_tiny(seed=0)
    pd.testing.assert_frame_equal(inter, again)
    pd.testing.assert_frame_equal(items, same)
    assert not inter.equals(tiny_world.make_tiny(seed=1)[0])
    assert items["title"].is_unique and len(items) == 24 * tiny_world.EPISODES
    assert all(title.split()[0] == cats[0] for title, cats in zip(items["title"], items["categories"]))
    # a fifth of the series carry a second category (24 series a world: averaged over 10 worlds)
    shares = [(tiny_world.make_tiny(seed=s)[1]["categories"].map(len) > 1).mean() for s in range(10)]
    assert 0.1 < sum(shares) / len(shares) < 0.3
    assert inter["user"].nunique() == 400


def test_the_tiny_world_has_a_sequence_signal_and_category_tastes():
    inter, items = tiny_world.make_tiny(seed=0)
    genre = dict(zip(items["item"], items["categories"].map(lambda c: c[0])))
    number = {item: int(i[1:]) for item, i in zip(items["item"], items["item"])}
    nxt, same_genre, pairs = 0, 0, 0
    for _, seq in inter.sort_values(["user", "timestamp"]).groupby("user")["item"]:
        seq = list(seq)
        for a, b in itertools.pairwise(seq):
            pairs += 1
            nxt += number[b] == number[a] + 1 and number[a] % tiny_world.EPISODES != tiny_world.EPISODES - 1
            same_genre += genre[a] == genre[b]
    assert 0.4 < nxt / pairs < 0.7  # SEQUEL_P, less the series that end
    assert same_genre / pairs > 0.7  # two liked categories of six


def test_stage01_reads_the_tiny_world_with_50_users_per_test_group_to_spare():
    prepared = data.build_dataset("tiny", seed=0)
    assert prepared.stats["users"] >= 300 and prepared.stats["items"] == 120


def test_the_tiny_tokenizer_is_deterministic_and_names_a_title_in_a_few_tokens():
    tok = llm.load_tokenizer(llm.TINY_LLAMA)
    again = tiny_lm.train_tokenizer(tiny_lm.tiny_world_corpus(), tiny_lm.TINY_LLAMA_VOCAB,
                                    prompts.template_phrases() + tiny_lm.list_markup_phrases())
    assert tok.get_vocab() == again.get_vocab()
    titles = [t for t, _ in tiny_world.catalog_titles()]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in titles]
    assert max(lengths) <= 4
    answer = format_item_list(titles[:12]) + "\nÜnknown Tïtle ☃"  # any string round-trips (byte level)
    assert tok.decode(tok(answer, add_special_tokens=False)["input_ids"]) == answer
    text = tok.apply_chat_template(prompts.chat_messages(prompts.render_instruction("I0", 3, titles[:2])),
                                   tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert llm.load_tokenizer(llm.TINY_LLAMA) is not llm.load_tokenizer(llm.TINY_LLAMA)  # callers get a copy


def test_the_tiny_tokenizer_reads_each_template_phrase_as_one_token_and_round_trips_every_task():
    tok = llm.load_tokenizer(llm.TINY_LLAMA)
    phrases = prompts.template_phrases()
    assert prompts.SYSTEM_PROMPT in phrases and " I hate '" in phrases and "' products" in phrases
    assert not any(p != p.rstrip() or len(p.strip()) < 3 for p in phrases)
    assert all(len(tok(p, add_special_tokens=False)["input_ids"]) == 1 for p in phrases)
    titles = [t for t, _ in tiny_world.catalog_titles()]
    lengths = {}
    for task in ("I0", "I1+C", "I1-C", "I2<=", "I2>=", "I2~=", "I3+C", "I3-C"):
        for candidates in (None, titles[20:25]) if not task.startswith("I2") else (None,):
            text = prompts.render_instruction(task, 7, titles[:10], "Horror", 0.3 if task.startswith("I2") else None,
                                              candidates, phrase_index=5)
            chat = tok.apply_chat_template(prompts.chat_messages(text), tokenize=False, add_generation_prompt=True)
            ids = tok(chat, add_special_tokens=False)["input_ids"]
            assert tok.decode(ids) == chat
            lengths[task, candidates is None] = len(ids)
    # I0 on 10 titles: 10 x 3 tokens of titles, 9 separators "', '" and the first and last quote, 14 of
    # chat markup, roles and the system sentence, 4 of template phrases and "7" (a title costs 4 tokens, 5
    # before the list markup)
    assert lengths["I0", True] == 10 * 3 + 9 + 2 + 14 + 4
    hate = tok(" I hate 'Horror' items", add_special_tokens=False)["input_ids"]  # the category stays a word
    assert tok.convert_ids_to_tokens(hate) == [" I hate '", "Horror", "' items"]


def test_the_tiny_tokenizer_reads_list_markup_as_one_token_and_titles_as_before():
    tok = llm.load_tokenizer(llm.TINY_LLAMA)
    answer = format_item_list(["Drama Island 1", "Horror Tower 2", "SciFi Canyon 5"] + ["Comedy River 3"] * 9)
    pieces = tok.convert_ids_to_tokens(tok(answer, add_special_tokens=False)["input_ids"])
    # a line is its start (the number, after the first line with the break before it) and 3 title words
    assert pieces[:9] == ["1.", "ĠDrama", "ĠIsland", "Ġ1", "\n2.", "ĠHorror", "ĠTower", "Ġ2", "\n3."]
    assert len(pieces) == 12 * 4 and pieces[4::4] == [f"\n{i}." for i in range(2, 13)]  # "\n11." is one token
    assert "Ċ" not in pieces and tok.decode(tok(answer, add_special_tokens=False)["input_ids"]) == answer
    assert tok.convert_ids_to_tokens(tok("a\nb", add_special_tokens=False)["input_ids"]) == ["a", "Ċ", "b"]
    history = tok(prompts.quote_titles(["Drama Island 1", "Horror Tower 2"]), add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(history) == ["'", "Drama", "ĠIsland", "Ġ1", "', '", "Horror", "ĠTower", "Ġ2", "'"]


def test_tiny_llama_is_small_and_the_same_for_a_seed():
    model, _ = llm.load_base(llm.TINY_LLAMA, seed=3)
    n = sum(p.numel() for p in model.parameters())
    assert 3e5 < n < 3e6
    other, _ = llm.load_base(llm.TINY_LLAMA, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
    assert not torch.equal(next(model.parameters()), next(llm.load_base(llm.TINY_LLAMA, seed=4)[0].parameters()))
