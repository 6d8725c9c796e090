"""recnb.sft: record selection, completion-only masking, LoRA training, adapter round trip, scoring."""

import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from tqdm.std import tqdm as std_tqdm
from trl import SFTTrainer

from recnb import artifacts as col
from recnb import llm, progress, prompts, sft
from recnb.answer import format_item_list
from recnb.catalog import Catalog
from recnb.sft import SFTConfig
from recnb.tasks import select_tasks


def _record(i: int, task: str = "I0") -> dict:
    history = [f"Film {j}" for j in range(i, i + 4)]
    text = prompts.TEMPLATES["I0"][0].format(history=prompts.quote_titles(history), item_count=3)
    return {
        "task": task, "user_id": i, "split": "train", "k": 3, "target": 10 + i, "history": [1, 2],
        "intent": {"kind": "I0", "category": None, "m": None}, "candidates": None,
        "prompt": [{"role": "system", "content": prompts.SYSTEM_PROMPT},
                   {"role": "user", "content": text.replace(prompts.SYSTEM_PROMPT + " ", "")}],
        "completion": format_item_list([f"Film {i + 10}", f"Film {i + 11}", f"Film {i + 12}"]),
    }


FIXED = [_record(i) for i in range(4)]
FAST = {"batch_size": 4, "effective_batch": 4, "learning_rate": 1e-2, "warmup": 0.0, "logging_steps": 1,
        "bf16": False}


def test_select_tasks_by_name_prefix_or_all():
    recs = [_record(0, "I0"), _record(1, "I1+C"), _record(2, "I1-C"), _record(3, "I2~=")]
    assert [r["task"] for r in select_tasks(recs, ["I0"])] == ["I0"]
    assert [r["task"] for r in select_tasks(recs, ["I1"])] == ["I1+C", "I1-C"]
    assert [r["task"] for r in select_tasks(recs, "I2~=")] == ["I2~="]
    assert len(select_tasks(recs, "all")) == 4
    with pytest.raises(ValueError, match="param 'tasks'"):
        select_tasks(recs, ["I3"])


def test_load_train_records_picks_the_file_of_the_label_source(tmp_path):
    teacher = [_record(i, t) for i, t in enumerate(["I0", "I1+C", "I0", "I3-C", "I0"])]
    (tmp_path / "sft_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in teacher))
    (tmp_path / "sft_train_palr.jsonl").write_text(json.dumps(_record(7)) + "\n")
    assert len(sft.load_train_records(tmp_path, SFTConfig(tasks="all"))) == 5
    assert [r["user_id"] for r in sft.load_train_records(tmp_path, SFTConfig(tasks=["I0"]))] == [0, 2, 4]
    assert [r["user_id"] for r in sft.load_train_records(tmp_path, SFTConfig(tasks=["I0"], label_source="history"))] == [7]
    subset = sft.load_train_records(tmp_path, SFTConfig(max_train_samples=3, seed=1))
    assert len(subset) == 3 and subset == sft.load_train_records(tmp_path, SFTConfig(max_train_samples=3, seed=1))
    with pytest.raises(ValueError, match="label_source = 'teacher-free' must be one of 'teacher', 'history'"):
        SFTConfig(label_source="teacher-free")
    with pytest.raises(FileNotFoundError, match="03_instructions"):
        sft.load_train_records(tmp_path / "missing", SFTConfig())


def test_grad_accumulation_reaches_the_effective_batch():
    assert sft.grad_accumulation(SFTConfig(batch_size=8, effective_batch=64)) == 8
    assert sft.grad_accumulation(SFTConfig(batch_size=16, effective_batch=8)) == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """tiny-random + LoRA, 30 steps on one fixed batch of 4 records."""
    settings = SFTConfig(max_steps=30, **FAST)
    model, tok, wrapped = sft.load_trainable(settings)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = sft.build_trainer(model, tok, FIXED, settings, tmp_path_factory.mktemp("sft"), wrapped, progress=False)
    trainer.train()
    return trainer, tok, before, settings


def test_the_sft_bar_redraws_about_100_times_whatever_the_steps(tmp_path, monkeypatch):
    """nbval reads a cell's output only once it ends; thousands of redraws overflow the kernel's output
    channel and lose the cell's end (a 2,256-step SFT did), so one bar, bounded, replaces transformers' own."""
    settings = SFTConfig(max_steps=2, **FAST)
    model, tok, wrapped = sft.load_trainable(settings)
    trainer = sft.build_trainer(model, tok, FIXED, settings, tmp_path, wrapped, progress=True)
    kinds = {type(c).__name__ for c in trainer.callback_handler.callbacks}
    assert "StepBar" in kinds and not kinds & {"NotebookProgressCallback", "ProgressCallback", "PrinterCallback"}
    out = io.StringIO()
    monkeypatch.setattr(progress, "bar", lambda *a, **kw: std_tqdm(*a, file=out, **kw))
    bar, state = sft.train.StepBar(), SimpleNamespace(max_steps=2256, global_step=0)
    bar.on_train_begin(None, state, None)
    for step in range(1, 2257):
        state.global_step = step
        bar.on_step_end(None, state, None)
        bar.on_log(None, state, None, logs={"loss": 1 / step})
    bar.on_train_end(None, state, None)
    assert 50 <= out.getvalue().count("\r") <= 130, out.getvalue().count("\r")
    assert "2256/2256" in out.getvalue() and "loss=0.000" in out.getvalue()


def _long_record(i: int) -> dict:
    rec = _record(i, "I3-C")
    rec["prompt"][1]["content"] += " Candidates: " + ", ".join(f"Candidate film {j}" for j in range(40))
    return rec


def _first_steps(seed: int, steps: int = 2) -> list[list[str]]:
    """Tasks of the samples of the first optimizer steps (each a list over its micro-batches)."""
    records = [_long_record(i) for i in range(160)] + [_record(i) for i in range(160, 480)]
    settings = SFTConfig(batch_size=2, effective_batch=8, max_steps=4, seed=seed, **{
        k: v for k, v in FAST.items() if k not in ("batch_size", "effective_batch")})
    model, tok, wrapped = sft.load_trainable(settings)
    trainer = sft.build_trainer(model, tok, records, settings, Path("unused"), wrapped, progress=False)
    loader = iter(trainer.get_train_dataloader())
    out = []
    for _ in range(steps):
        micro = [next(loader) for _ in range(sft.grad_accumulation(settings))]
        # a micro-batch is padded to its longest record: tell the two kinds apart by unpadded length
        out.append(["I3" if m > 250 else "I0" for b in micro for m in b["attention_mask"].sum(1).tolist()])
    return out


def test_each_optimizer_step_is_a_random_draw_not_the_longest_records():
    steps = _first_steps(seed=0, steps=4)
    # A third of the 480 records are long. transformers' group_by_length sorts up to 50 steps' worth by
    # length (15 here), so its first 4 steps would hold only long records; a random draw, about a third
    assert [len(tasks) for tasks in steps] == [8, 8, 8, 8]  # micro-batch sizes vary, steps do not
    drawn = sum(tasks.count("I3") for tasks in steps)
    assert 4 <= drawn <= 14 and steps[0] != ["I3"] * 8
    assert _first_steps(seed=0, steps=4) == steps
    assert any(_first_steps(seed=s, steps=4) != steps for s in (1, 2))


def test_completion_only_masking_on_a_rendered_example(trained):
    trainer, tok, _, _ = trained
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    answer = [t for t, lab in zip(ids, labels) if lab != -100]
    prompt = [t for t, lab in zip(ids, labels) if lab == -100]
    assert tok.decode(answer) == FIXED[0]["completion"] + "<|im_end|>\n"
    assert tok.decode(prompt).endswith("different items.<|im_end|>\n<|im_start|>assistant\n")
    assert len(prompt) + len(answer) == len(ids) and labels[: len(prompt)] == [-100] * len(prompt)


def test_lora_trains_only_adapter_weights_and_loss_falls(trained):
    trainer, _, before, _ = trained
    after = dict(trainer.model.named_parameters())
    base = [n for n in after if "lora_" not in n]
    lora = [n for n in after if "lora_" in n]
    assert len(lora) == 2 * 7 * 2  # A and B of 7 projections in 2 layers
    # base weights by their plain name (unsloth's CPU backend hands over the model already LoRA-wrapped)
    plain = {n.replace("base_model.model.", "").replace(".base_layer", ""): n for n in base}
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in before.items()
              if "lora_" not in n}
    assert frozen.keys() == plain.keys()
    assert all(torch.equal(frozen[k], after[plain[k]]) for k in frozen)
    assert all(not after[n].requires_grad for n in base)
    assert all(not torch.equal(after[n], torch.zeros_like(after[n])) for n in lora if "lora_B" in n)
    log = sft.train_log(trainer)
    assert len(log) == 30 and log["tokens_per_s"].gt(0).all()
    assert log["loss"].iloc[-1] < log["loss"].iloc[0] - 0.2


def test_our_completion_loss_equals_trl_stock_loss(trained):
    trainer, _, _, _ = trained
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    model = trainer.model.eval()
    with torch.no_grad():
        ours = trainer.compute_loss(model, dict(batch))
        stock = SFTTrainer.compute_loss(trainer, model, dict(batch))
    assert ours.item() == pytest.approx(stock.item(), rel=1e-5)


def test_adapter_save_and_load_for_inference_reproduce_logits(trained, tmp_path):
    trainer, tok, _, settings = trained
    sft.save_adapter(trainer.model, tok, tmp_path, settings)
    (tmp_path / col.PARAMS_FILE).write_text(json.dumps({"base_model": llm.TINY_RANDOM}))
    merged, _ = llm.load_for_inference(tmp_path)
    batch = tok(llm.render_prompts(tok, [FIXED[1]["prompt"]], 512), return_tensors="pt")
    with torch.no_grad():
        expected = trainer.model.eval()(**batch).logits
        got = merged(**batch).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(llm.load_base(llm.TINY_RANDOM)[0](**batch).logits, expected, atol=1e-3)


def test_full_finetuning_trains_every_weight_and_loads_back_for_inference(tmp_path):
    settings = SFTConfig(base_model=llm.TINY_LLAMA, finetune="full", max_steps=20, **FAST)
    model, tok, wrapped = sft.load_trainable(settings)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = sft.build_trainer(model, tok, FIXED, settings, tmp_path / "run", wrapped, progress=False)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert set(after) == set(before) and not any("lora_" in n for n in after)  # no adapter: the model itself
    assert all(not torch.equal(before[n], after[n]) for n in before if "norm" not in n)
    log = sft.train_log(trainer)
    assert log["loss"].iloc[-1] < log["loss"].iloc[0] - 1.0
    sft.save_adapter(trainer.model, tok, tmp_path, settings)
    assert not (tmp_path / col.ADAPTER_DIR / "adapter_config.json").exists()
    (tmp_path / col.PARAMS_FILE).write_text(json.dumps({"base_model": llm.TINY_LLAMA}))
    loaded, loaded_tok = llm.load_for_inference(tmp_path)
    batch = tok(llm.render_prompts(tok, [FIXED[1]["prompt"]], 512), return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, trainer.model.eval()(**batch).logits, atol=1e-5)
    assert loaded_tok.get_vocab() == tok.get_vocab()


def test_bf16_autocast_loss_stays_close_to_fp32(trained):
    trainer, _, _, _ = trained
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    model = trainer.model.eval()
    with torch.no_grad():
        fp32 = trainer.compute_loss(model, dict(batch)).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = trainer.compute_loss(model, dict(batch)).item()
    assert bf16 == pytest.approx(fp32, rel=0.02)


def test_score_answers_hand_computed():
    items = pd.DataFrame({col.ITEM: [1, 2, 3, 4], col.TITLE: ["Alpha (1990)", "Beta (1991)", "Gamma (1992)", "Delta (1993)"],
                          col.CATEGORIES: [["Drama"], ["Comedy"], ["Drama"], ["Comedy"]]})
    rec = {"task": "I1+C", "user_id": 5, "k": 4, "target": 3, "history": [1],
           "intent": {"kind": "+C", "category": "Drama", "m": None}}
    answer = "1. Beta (1991)\n2. Gamma (1992)\n3. Nope (2000)\n4. Alpha (1990)"
    scores = sft.score_answers([rec], [answer], Catalog(items))
    row = scores.iloc[0]
    assert row["hit"] == 1.0 and row["ndcg"] == pytest.approx(1 / math.log2(3))
    assert row["tcp"] == pytest.approx(0.5)  # Gamma and Alpha are Drama: 2 of K=4
    summary = sft.summarise_scores(scores)["all"]
    assert summary["non_exist_pct"] == pytest.approx(25.0) and summary["in_history_pct"] == pytest.approx(25.0)
    assert summary["correct_count_pct"] == 100.0
    assert summary["tcp_plus_c_pct"] == pytest.approx(50.0) and math.isnan(summary["tcp_minus_c_pct"])


def test_valid_check_options_cast_after_training_and_stop_without_changing_a_metric(trained, monkeypatch):
    """`valid_dtype` casts the model for the valid check only (auto: untouched); `valid_stop_past_k` hands
    each prompt's k to the decoder (`llm.ListOverflow`) and scores as the plain check does."""
    _, tok, _, settings = trained
    model, _ = llm.load_base("tiny-random")
    assert sft.for_validation(model, settings).dtype == torch.float32  # auto
    items = pd.DataFrame({col.ITEM: [1, 2], col.TITLE: ["Film 1", "Film 2"], col.CATEGORIES: [["Drama"], ["Comedy"]]})
    records = [{**_record(i), "k": 2 + i} for i in range(4)]
    plain = sft.evaluate_valid(model, tok, records, items, settings, progress=False)
    seen, generate = [], llm.generate
    monkeypatch.setattr(llm, "generate", lambda *a, **kw: seen.append(kw.get("item_limits")) or generate(*a, **kw))
    stopped = sft.evaluate_valid(model, tok, records, items, SFTConfig(**{**FAST, "valid_stop_past_k": True}),
                                 progress=False)
    assert seen == [[2, 3, 4, 5]]
    pd.testing.assert_frame_equal(plain.drop(columns="raw"), stopped.drop(columns="raw"))
    monkeypatch.setenv(llm.CPU_BF16_ENV, "1")  # bf16 on any CPU (else fp32 where the CPU lacks AVX-512)
    assert sft.for_validation(model, SFTConfig(**{**FAST, "valid_dtype": "bfloat16"})).dtype == torch.bfloat16


def test_bf16_asked_on_a_cpu_without_fast_bf16_runs_fp32_and_says_so(monkeypatch, tmp_path):
    """bf16 is only a speed setting here: where it is slow (`RECNB_CPU_BF16=0` stands for an AVX2 CPU) the
    valid cast, the decoding weights and SFT's autocast fall back to fp32 with one warning each."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(llm, "_warned_bf16", set())
    monkeypatch.setenv(llm.CPU_BF16_ENV, "0")
    with pytest.warns(UserWarning, match="no AVX-512.*using float32 .RECNB_CPU_BF16=1 forces bf16"):
        assert llm.resolve_dtype("bfloat16", cpu) == torch.float32
    assert llm.resolve_dtype(torch.bfloat16, cpu) == torch.float32  # warned once already
    assert llm.resolve_dtype("float32", cpu) == torch.float32 and llm.resolve_dtype("auto", cpu) == torch.float32
    with pytest.warns(UserWarning, match="SFT bf16 autocast: bf16 asked"):
        assert not sft.train.uses_bf16(SFTConfig(**{**FAST, "bf16": True}), cpu)
    assert sft.train.trainer_args(tmp_path, SFTConfig(**{**FAST, "bf16": True}), cpu).bf16 is False
    monkeypatch.setenv(llm.CPU_BF16_ENV, "1")
    assert llm.resolve_dtype("bfloat16", cpu) == torch.bfloat16 and sft.train.uses_bf16(SFTConfig(**{**FAST, "bf16": True}), cpu)
    assert not sft.train.uses_bf16(SFTConfig(**FAST), cpu)  # not asked
    monkeypatch.setenv(llm.CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="RECNB_CPU_BF16='yes': use 1"):
        llm.cpu_bf16_fast()
    monkeypatch.delenv(llm.CPU_BF16_ENV)
    assert llm.cpu_bf16_fast() == (torch.cpu._is_avx512_supported() or torch.cpu._is_avx512_bf16_supported()
                                   or torch.cpu._is_amx_tile_supported())


def test_valid_slice_keeps_the_first_n_of_each_task():
    recs = [_record(i, t) for i, t in enumerate(["I0", "I0", "I1+C", "I0", "I1+C", "I1+C"])]
    assert [r["user_id"] for r in sft.valid_slice(recs, 2)] == [0, 1, 2, 4]


@pytest.mark.gpu
def test_unsloth_path_trains_on_cuda(tmp_path):
    settings = SFTConfig(base_model=llm.SMOLLM2, max_steps=3, use_unsloth=True, **{**FAST, "bf16": True})
    result, _ = sft.train_sft(FIXED, settings, tmp_path, progress=False)
    assert "unsloth" in type(result.model).__module__.lower() or hasattr(result.model, "peft_config")
    assert result.log["loss"].notna().all() and len(result.log) == 3


def test_unsloth_is_used_only_on_cuda_or_when_forced(monkeypatch):
    monkeypatch.delenv(sft.train.UNSLOTH_CPU_ENV, raising=False)
    asked = SFTConfig(base_model=llm.TINY_LLAMA, use_unsloth=True, **FAST)
    assert sft.train.unsloth_wanted(asked) == torch.cuda.is_available()
    monkeypatch.setenv(sft.train.UNSLOTH_CPU_ENV, "1")
    assert sft.train.unsloth_wanted(SFTConfig(base_model=llm.TINY_LLAMA, **FAST))  # forced, whatever the params
    monkeypatch.setenv(sft.train.UNSLOTH_CPU_ENV, "yes")
    with pytest.raises(ValueError, match="RECNB_UNSLOTH_CPU='yes': use 1"):
        sft.train.unsloth_wanted(asked)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_unsloth_cpu_backend_trains_the_same_contract(tmp_path, monkeypatch, finetune):
    """`make check-gpu-set` (unsloth's library set): unsloth prepares the model on its CPU backend,
    the loss falls, and stage 04's adapter/ loads back for inference like the plain path's."""
    pytest.importorskip("unsloth", reason="unsloth is in the [gpu] extra (make check-gpu-set installs it)")
    monkeypatch.setenv(sft.train.UNSLOTH_CPU_ENV, "1")
    settings = SFTConfig(base_model=llm.TINY_LLAMA, finetune=finetune, max_steps=20, lora_r=8, lora_alpha=16, **FAST)
    result, tok = sft.train_sft(FIXED, settings, tmp_path / "run", progress=False)
    assert result.trainer == "unsloth"
    assert result.log["loss"].iloc[-1] < result.log["loss"].iloc[0] - 0.5
    sft.save_adapter(result.model, tok, tmp_path, settings)
    assert (tmp_path / col.ADAPTER_DIR / "adapter_config.json").exists() == (finetune == "lora")
    (tmp_path / col.PARAMS_FILE).write_text(json.dumps({"base_model": llm.TINY_LLAMA}))
    loaded, _ = llm.load_for_inference(tmp_path)
    batch = tok(llm.render_prompts(tok, [FIXED[1]["prompt"]], 512), return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, result.model.eval()(**batch).logits, atol=1e-4)
