"""recnb.llm: base models, prompt rendering with history truncation, batched generation, adapters."""

import dataclasses
import json

import pytest
import torch

from recnb import llm, prompts


def _messages(history_titles, k=5):
    text = prompts.TEMPLATES["I0"][0].format(history=prompts.quote_titles(history_titles), item_count=k)
    return [{"role": "system", "content": prompts.SYSTEM_PROMPT},
            {"role": "user", "content": text.replace(prompts.SYSTEM_PROMPT + " ", "")}]


@pytest.fixture(scope="module")
def tiny():
    return llm.load_base(llm.TINY_RANDOM)


def test_tiny_random_is_seeded_and_small(tiny):
    model, _ = llm.load_base(llm.TINY_RANDOM)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n_params < 2_000_000
    assert len(model.model.layers) == 2
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), tiny[0].parameters()))
    other, _ = llm.load_base(llm.TINY_RANDOM, seed=1)
    assert not torch.equal(other.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert not model.training


def test_tokenizer_pads_left_with_a_token_other_than_eos(tiny):
    _, tok = tiny
    assert tok.padding_side == "left"
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.pad_token_id != tok.eos_token_id


def test_render_prompts_uses_our_system_line_and_generation_prompt(tiny):
    _, tok = tiny
    [text] = llm.render_prompts(tok, [_messages(["A (1990)"])], max_prompt_tokens=512)
    assert text.startswith(f"<|im_start|>system\n{prompts.SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
    assert "SmolLM" not in text  # the template's default system prompt is not injected
    assert text.endswith("<|im_start|>assistant\n")


def test_render_prompts_drops_oldest_history_items_never_the_instruction(tiny):
    _, tok = tiny
    titles = [f"Movie {i:02d}, The (19{i:02d})" for i in range(40)]
    [full] = llm.render_prompts(tok, [_messages(titles)], max_prompt_tokens=2048)
    [short] = llm.render_prompts(tok, [_messages(titles)], max_prompt_tokens=150)
    assert len(tok(full)["input_ids"]) > 300
    assert len(tok(short)["input_ids"]) <= 150
    assert "follows: 'Movie" in short  # restarts at a whole quoted title
    assert "'Movie 39, The (1939)'. You need to generate a recommendation list with 5 different items." in short
    assert "Movie 00," not in short and "You need to generate a recommendation list considering" in short


def test_generate_batched_equals_one_by_one_and_keeps_order(tiny):
    model, tok = tiny
    convs = [_messages(["A"] * n) for n in (1, 7, 3)]
    batched = llm.generate(model, tok, convs, llm.Decoding(max_new_tokens=6, batch_size=3), progress=False)
    single = [llm.generate(model, tok, [c], llm.Decoding(max_new_tokens=6), progress=False)[0] for c in convs]
    assert batched == single


def test_inplace_cache_gives_the_default_caches_logits_also_when_its_buffer_grows(tiny):
    model, tok = tiny
    texts = llm.render_prompts(tok, [_messages(["A"] * n) for n in (1, 4)], 512)
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    [(key, grown)] = llm.answer_cache(model, max_new_tokens=2).items()  # room for 3 steps: grows on step 4
    runs = []
    for cache in (grown, llm.DynamicCache()):
        ids, mask, logits = batch["input_ids"], batch["attention_mask"], []
        with torch.no_grad():
            for _ in range(6):
                out = model(input_ids=ids, attention_mask=mask, use_cache=True, **{key: cache})
                logits.append(out.logits[:, -1])
                ids = out.logits[:, -1:].argmax(-1)
                mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        runs.append(torch.stack(logits))
    assert torch.equal(runs[0], runs[1])
    layer = grown.layers[0]
    assert layer.get_seq_length() == batch["input_ids"].shape[1] + 5
    # prompt + 3 spare; step 4 finds it full and reallocates: the 73 filled + 1 new + 3 spare
    assert layer._k.shape[-2] == batch["input_ids"].shape[1] + 3 + 1 + 3


def test_generate_with_the_inplace_cache_answers_as_with_the_default_one(tiny, monkeypatch):
    model, tok = tiny
    convs = [_messages(["A", "B"] * n) for n in (1, 5, 2)]
    calls = []  # (cache class, generated token ids) per generate call
    real = model.generate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((type(kwargs.get("cache", kwargs.get("past_key_values"))).__name__, out))
        return out

    monkeypatch.setattr(model, "generate", spy)
    for how in (llm.Decoding(max_new_tokens=12, batch_size=2, drop_finished=False),
                llm.Decoding(max_new_tokens=12, batch_size=2, do_sample=True, temperature=0.9)):
        for inplace in (True, False):
            torch.manual_seed(3)
            llm.generate(model, tok, convs, dataclasses.replace(how, inplace_cache=inplace), progress=False)
    assert [name for name, _ in calls] == (["DynamicCache"] * 2 + ["NoneType"] * 2) * 2
    for run in (0, 4):  # greedy, then sampled: the same tokens with either cache, batch by batch
        for b in (0, 1):
            assert torch.equal(calls[run + b][1], calls[run + 2 + b][1])
    longest_prompt = len(tok(llm.render_prompts(tok, convs[1:2], 512)[0])["input_ids"])
    assert calls[0][1].shape[1] > longest_prompt + 5  # tokens were generated
    assert not torch.equal(calls[0][1], calls[4][1])  # sampling drew other tokens than greedy


def test_continuation_logprobs_equal_a_full_forward_pass(tiny):
    """The shared-prefix KV cache, right padding and chunking give the log-probs of one plain pass."""
    model, tok = tiny
    prefix = llm.render_prompts(tok, [_messages(["Heat (1995)", "Fargo (1996)"])], 512)[0] + "1."
    conts = [" Toy Story (1995)\n", " Babe (1995)\n", " The Usual Suspects (1995)\n"]
    got = llm.continuation_logprobs(model, tok, prefix, conts, batch_size=2)
    n_prefix = len(tok(prefix, add_special_tokens=False)["input_ids"])
    for cont, (lp, n) in zip(conts, got):
        ids = tok(prefix + cont, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        want = logp[torch.arange(n_prefix - 1, ids.shape[1] - 1), ids[0, n_prefix:]].sum()
        assert n == ids.shape[1] - n_prefix and lp == pytest.approx(float(want), abs=1e-4)
    assert got[1][0] != pytest.approx(got[2][0])  # different titles, different scores
    with pytest.raises(ValueError, match="token boundary"):
        llm.continuation_logprobs(model, tok, prefix + " ", ["Toy Story"])


def test_generate_passes_num_beams_to_greedy_generation_and_refuses_it_with_sampling(tiny, monkeypatch):
    model, tok = tiny
    seen = []
    real = model.generate

    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("num_beams", "do_sample")})
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    convs = [_messages(["A", "B"] * n) for n in (1, 3)]
    answers = llm.generate(model, tok, convs, llm.Decoding(max_new_tokens=4, num_beams=3, batch_size=2), progress=False)
    assert len(answers) == 2 and seen == [{"num_beams": 3, "do_sample": False}]
    with pytest.raises(ValueError, match="do_sample=False"):
        llm.Decoding(num_beams=2, do_sample=True)


def test_unknown_model_is_a_clear_error_before_any_hub_retry():
    for name in ("/nonexistent/model", "smollm2-135M"):
        with pytest.raises(ValueError, match=f"base_model = '{name}' is neither a built-in model "
                                             r"\(smollm2-135m, tiny-random, tiny-llama\)"):
            llm.load_base(name)


@pytest.mark.slow
def test_smollm2_answers_a_chat_prompt():
    model, tok = llm.load_base(llm.SMOLLM2)
    assert "quantization_config" not in model.config.to_dict()
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Name three colours."}]
    [answer] = llm.generate(model, tok, [messages], llm.Decoding(max_new_tokens=30), progress=False)
    assert len(answer.split()) >= 3


class _Force:
    """A logits processor that makes any model write `text`, then EOS (per row, same text)."""

    def __init__(self, tok, text):
        self.ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        self.start = None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = min(input_ids.shape[1] - self.start, len(self.ids) - 1)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.ids[step]] = 0.0
        return forced


class _EndAt:
    """A logits processor that lets the model choose among its ordinary tokens, but ends each row with
    EOS after 2 + (its prompt's real tokens mod 7) tokens: rows of one batch end at different steps."""

    def __init__(self, tok):
        self.tok, self.start = tok, None
        # the untrained model's favourites: special and blank tokens (its answers would strip to "")
        texts = tok.batch_decode([[i] for i in range(len(tok))])
        self.banned = [i for i, t in enumerate(texts) if not t.strip()] + tok.all_special_ids

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        real = (input_ids[:, :self.start] != self.tok.pad_token_id).sum(1)
        ending = input_ids.shape[1] - self.start >= 2 + real % 7
        scores = scores.clone()
        scores[:, self.banned] = float("-inf")
        scores[ending] = float("-inf")
        scores[ending, self.tok.eos_token_id] = 0.0
        return scores


def test_greedy_rows_drops_ended_rows_and_answers_as_transformers_generate(tiny):
    from transformers import LogitsProcessorList

    model, tok = tiny
    convs = [_messages(["A", "B"] * n) for n in (1, 2, 3, 4, 5, 6, 7, 8)]
    rows_per_step = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: rows_per_step.append(len(kwargs["input_ids"])),
                                           with_kwargs=True)
    answers = {}
    try:
        for drop in (False, True):
            rows_per_step.clear()
            how = llm.Decoding(max_new_tokens=12, batch_size=8, drop_finished=drop, share_prefixes=False)
            answers[drop] = llm.generate(model, tok, convs, how,
                                         logits_processor=LogitsProcessorList([_EndAt(tok)]), progress=False)
            steps = list(rows_per_step)
    finally:
        hook.remove()
    assert answers[True] == answers[False]
    lengths = sorted(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers[True])
    assert lengths[0] >= 1 and lengths[0] < lengths[-1]  # real answers, ending at different steps
    assert steps[0] == 8 and steps[-1] < 8 and steps == sorted(steps, reverse=True)  # the batch shrank
    assert len(steps) <= 12


def test_list_overflow_stops_each_row_once_it_lists_more_than_its_k_items(tiny):
    from transformers import LogitsProcessorList

    from recnb.answer import parse_titles

    model, tok = tiny
    text = "Sure:\n1. Alpha\n2. Beta\n3. Gamma\n4. Delta\n5. Epsilon"
    convs = [_messages(["A"]), _messages(["B", "C"])]
    decoding = llm.Decoding(max_new_tokens=40, batch_size=2)
    full = llm.generate(model, tok, convs, decoding, logits_processor=LogitsProcessorList([_Force(tok, text)]),
                        progress=False)
    cut = llm.generate(model, tok, convs, decoding, logits_processor=LogitsProcessorList([_Force(tok, text)]),
                       progress=False, item_limits=[1, 3])
    assert full == [text, text]
    assert cut == ["Sure:\n1. Alpha\n2. Beta", "Sure:\n1. Alpha\n2. Beta\n3. Gamma\n4. Delta"]
    for k, answer in zip((1, 3), cut):  # the first k items and "more than k" are what the metrics read
        assert parse_titles(answer)[:k] == parse_titles(text)[:k] and len(parse_titles(answer)) > k


def test_list_overflow_never_stops_on_unnumbered_chatter(tiny):
    _, tok = tiny
    stop = llm.ListOverflow(tok, prompt_len=2, limits=[1])
    ids = tok("ab", add_special_tokens=False)["input_ids"][:2]
    for line in ("Here are\n", "some lines\n", "without numbers\n"):
        ids = ids + tok(line, add_special_tokens=False)["input_ids"]
        assert not bool(stop(torch.tensor([ids]), None)[0])  # a numbered list could still follow and drop them
    ids = ids + tok("1. A\n2. B\n", add_special_tokens=False)["input_ids"]
    assert bool(stop(torch.tensor([ids]), None)[0])


class _Vocab:
    """A tokenizer stand-in whose token 3 holds a line break *and* the start of the next line."""

    pieces = ("1. A", "\n", "2. B", '\n- "', "3. C")

    def __len__(self):
        return len(self.pieces)

    def batch_decode(self, ids_list):
        return [self.decode(ids) for ids in ids_list]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[int(i)] for i in ids)


def test_list_overflow_reads_complete_lines_only():
    # '1. A\n2. B\n3. C\n- "': the fragment '- "' parses as a 4th (bulleted) entry now, but '- " "' would
    # be dropped later (an empty title); with k = 3 the row must go on
    stop = llm.ListOverflow(_Vocab(), prompt_len=0, limits=[3])
    assert not bool(stop(torch.tensor([[0, 1, 2, 1, 4, 3]]), None)[0])
    assert bool(llm.ListOverflow(_Vocab(), prompt_len=0, limits=[2])(torch.tensor([[0, 1, 2, 1, 4, 3]]), None)[0])


def test_item_limits_refuse_beam_search(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="beam search"):
        llm.generate(model, tok, [_messages(["A"])], llm.Decoding(max_new_tokens=2, num_beams=2), progress=False,
                     item_limits=[3])


def test_shared_prefix_lengths_and_families_by_hand():
    lists = [[1, 2, 3, 4, 5], [9, 9], [1, 2, 3, 4, 6, 7], [1, 2, 8], [9, 9, 1]]
    assert llm.shared_prefix_lengths(lists) == [4, 2, 4, 2, 2]
    # [0, 2] share 4 tokens (tails 1 and 2). [3] shares 2 with them, but they share more with each
    # other: alone, its prefix all but its last token. [1] keeps its last token as its tail, so its
    # prefix [9] is not [4]'s [9, 9]: both alone (a prompt inside another is not shared)
    assert llm.prefix_families(lists) == [(4, [0, 2]), (2, [3]), (2, [4]), (1, [1])]
    assert llm.prefix_families(lists, max_tail=1) == [(5, [2]), (4, [0]), (2, [3]), (2, [4]), (1, [1])]
    fams = [(9, [0, 1, 2]), (8, [3]), (7, [4, 5, 6, 7, 8])]
    assert llm.family_batches(fams, 4) == [[(9, [0, 1, 2]), (8, [3])], [(7, [4, 5, 6, 7])], [(7, [8])]]
    assert llm.family_batches(fams, 3) == [[(9, [0, 1, 2])], [(8, [3])], [(7, [4, 5, 6])], [(7, [7, 8])]]


def test_shared_prefixes_give_the_logits_and_answers_of_whole_prompts(tiny):
    """A user's prompts that differ in k only: the prefix prefilled once, the tails after it."""
    from transformers import LogitsProcessorList

    model, tok = tiny
    convs = [_messages(["A", "B"] * n, k=k) for n in (1, 3) for k in (5, 12, 7)]
    token_lists = [tok(t, add_special_tokens=False)["input_ids"] for t in llm.render_prompts(tok, convs, 512)]
    families = llm.prefix_families(token_lists)
    assert sorted(len(m) for _, m in families) == [3, 3]  # one family per history, sharing all but the k's tail

    class FirstScores(_EndAt):
        def __call__(self, input_ids, scores):
            if self.start is None:
                self.first = scores.clone()
            return super().__call__(input_ids, scores)

    [batch] = llm.family_batches(families, 8)
    idx = [i for _, m in batch for i in m]
    head = llm._left_pad([token_lists[m[0]][:n] for n, m in batch], tok.pad_token_id, "cpu")
    of_row = torch.tensor([f for f, (_, m) in enumerate(batch) for _ in m])
    tails = llm._left_pad([token_lists[i][n:] for n, m in batch for i in m], tok.pad_token_id, "cpu")
    whole = llm._left_pad([token_lists[i] for i in idx], tok.pad_token_id, "cpu")
    got = {}
    for name, (ids, mask), prefixes in (("shared", tails, llm.SharedPrefixes(*head, of_row)), ("whole", whole, None)):
        probe = FirstScores(tok)
        got[name] = llm.greedy_rows(model, tok, ids, mask, 9, logits_processor=LogitsProcessorList([probe]),
                                    prefixes=prefixes)
        got[name + "_scores"] = probe.first
    assert torch.allclose(got["shared_scores"], got["whole_scores"], atol=1e-4)
    assert got["shared"] == got["whole"]
    answers = {share: llm.generate(model, tok, convs, llm.Decoding(max_new_tokens=9, batch_size=8, share_prefixes=share),
                                   logits_processor=LogitsProcessorList([_EndAt(tok)]), progress=False)
               for share in (True, False)}
    assert answers[True] == answers[False] and all(answers[True])


def test_a_model_with_logits_processors_in_its_generation_config_decodes_through_generate(tiny, monkeypatch):
    model, tok = tiny
    calls = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs))
    how = llm.Decoding(max_new_tokens=3)
    assert llm.plain_greedy(model)
    llm.generate(model, tok, [_messages(["A"])], how, progress=False)
    assert calls == []  # our loop
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.3)
    assert not llm.plain_greedy(model)
    llm.generate(model, tok, [_messages(["A"])], how, progress=False)
    assert len(calls) == 1  # generate applies the penalty our loop would leave out


def test_weights_trained_under_another_vocabulary_are_refused_with_the_stage_named(tmp_path):
    from recnb import record

    tok = llm.load_tokenizer(llm.TINY_LLAMA)
    same = tmp_path / "same" / "adapter"
    tok.save_pretrained(same)
    llm._same_tokenizer(same, tok)  # the tokenizer it was trained with: accepted
    llm._same_tokenizer(tmp_path / "no_tokenizer_saved", tok)  # nothing to compare: accepted
    # a stage 04 with `finetune: full` (the whole model in adapter/) saved under an older vocabulary
    stage = tmp_path / "04_sft_unsloth"
    model, _ = llm.load_base(llm.TINY_LLAMA, seed=0)
    model.save_pretrained(stage / "adapter")
    older = llm.load_tokenizer(llm.TINY_LLAMA)
    older.add_tokens(["<an extra token>"])  # one token more than today's
    older.save_pretrained(stage / "adapter")
    record.write_json(stage / "params.json", {"base_model": llm.TINY_LLAMA})
    want = rf"04_sft_unsloth: trained with another tokenizer .*\({len(tok) + 1} tokens; {len(tok)} today\).*--force"
    with pytest.raises(ValueError, match=want):
        llm.load_for_inference(stage, device="cpu")
    # as many tokens, other ids: still another vocabulary
    vocab = json.loads((same / "tokenizer.json").read_text())
    bpe = vocab["model"]["vocab"]
    first, second = sorted(bpe, key=bpe.get)[300:302]
    bpe[first], bpe[second] = bpe[second], bpe[first]
    swapped = tmp_path / "swapped" / "adapter"
    swapped.mkdir(parents=True)
    (swapped / "tokenizer.json").write_text(json.dumps(vocab))
    assert llm.tokenizer_change(swapped, tok) == (f"trained with another tokenizer than its base model has today "
                                                  f"(the same {len(tok)} tokens, other ids)")
    (swapped / "tokenizer.json").write_text('{"model": ')
    assert llm.tokenizer_change(swapped, tok).startswith("adapter/tokenizer.json unreadable")
