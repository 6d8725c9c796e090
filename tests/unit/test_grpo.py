"""Stage 05 with `algorithm: grpo`: group advantages by hand (a zero-variance group included), item
credit on the tokens PPO pays R_item on, the config's rules, resume, and a functional run on the toy
where a reward paying for one category must rise on every seed."""

import copy
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from recnb.ppo import grpo, toy
from recnb.ppo.config import PPOConfig
from recnb.ppo.loop import train_ppo
from recnb.ppo.model import ActorCritic
from recnb.ppo.rollout import Rollout, answer_items, response_mask, score_rollout
from recnb.ppo.update import make_optimizer

RECORDS = toy.records(8)
E = grpo.EPS


def test_list_advantages_standardise_within_each_group_and_a_flat_group_teaches_nothing():
    # group 1: mean 2, sample std 1; group 2: every answer scored 5 (zero variance)
    got = grpo.group_list_advantages([1.0, 2.0, 3.0, 5.0, 5.0, 5.0], group_size=3)
    assert got == pytest.approx([-1 / (1 + E), 0.0, 1 / (1 + E), 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="groups of 4"):
        grpo.group_list_advantages([1.0, 2.0, 3.0], group_size=4)


def test_item_advantages_standardise_reward_to_go_per_position_among_answers_that_reach_it():
    assert grpo.reward_to_go([1.0, -1.0, 0.5]) == pytest.approx([0.5, -0.5, 0.5])
    # rewards-to-go: a [1, 0], b [1, 1, 1], c [1]. Position 0: all 1 -> 0. Position 1: a 0, b 1 ->
    # mean 0.5, std 0.7071 -> -0.7071, +0.7071. Position 2: only b -> 0.
    got = grpo.group_item_advantages([[1.0, 0.0], [0.0, 0.0, 1.0], [1.0]], group_size=3)
    h = 0.5 / (2 ** 0.5 / 2 + E)
    assert got[0] == pytest.approx([0.0, -h]) and got[1] == pytest.approx([0.0, h, 0.0]) and got[2] == [0.0]
    assert grpo.group_item_advantages([[], []], group_size=2) == [[], []]  # empty answers have no items


def test_token_advantages_put_list_on_every_token_and_item_on_its_span():
    adv = grpo.token_advantages([0.5], [[1.0, -2.0]], [[2, 5]], lengths=[7], width=9)
    assert adv[0].tolist() == pytest.approx([1.5, 1.5, 1.5, -1.5, -1.5, -1.5, 0.5, 0.0, 0.0])
    assert grpo.token_advantages([0.5], None, [[2, 5]], [7], 9)[0].tolist() == pytest.approx([0.5] * 7 + [0.0] * 2)
    # two items ending on one token (a cut answer): the second adds to that token only
    assert grpo.token_advantages([0.0], [[1.0, 3.0]], [[1, 1]], [3], 3)[0].tolist() == pytest.approx([1.0, 4.0, 0.0])


def test_item_credit_ends_on_the_tokens_where_ppo_pays_item_rewards():
    tok = toy.toy_tokenizer()
    ids = tok("1. Apple\n2. Tiger\n3. Plum", add_special_tokens=False)["input_ids"]
    resp = torch.tensor([ids + [tok.eos_token_id, tok.pad_token_id]])
    rollout = Rollout(torch.tensor([[5]]), torch.ones(1, 1, dtype=torch.long), resp,
                      response_mask(resp, tok.eos_token_id), [tok.decode(ids)])
    scorer = lambda record, titles: SimpleNamespace(legal=[True] * 3, item_rewards=[0.1, 0.2, 0.3], list_reward=0.0)
    scores, _ = score_rollout(rollout, [{}], tok, scorer, item_rewards=True, list_reward_scale=10.0)
    lines, ends, length = answer_items(rollout, 0, tok)
    assert [line.title for line in lines] == ["Apple", "Tiger", "Plum"] and length == len(ids) + 1
    assert ends == scores[0].nonzero().flatten().tolist()  # the same three tokens
    adv = grpo.token_advantages([0.0], [[1.0, 2.0, 3.0]], [ends], [length], resp.shape[1])[0]
    assert adv[: ends[0] + 1].eq(1.0).all() and adv[ends[0] + 1: ends[1] + 1].eq(2.0).all()
    assert adv[ends[1] + 1: ends[2] + 1].eq(3.0).all()
    assert adv[ends[2] + 1:].eq(0.0).all()  # EOS and padding: no item credit (and no list advantage here)


def test_config_rules_for_grpo():
    PPOConfig(**toy.GRPO_SETTINGS)  # the toy's settings are valid
    problems = PPOConfig.check_together({**PPOConfig().__dict__, "algorithm": "grpo", "batch_size": 6,
                                         "group_size": 4, "minibatch_size": 2, "kl_coef": 0.05})
    assert any("multiple of group_size" in p for p in problems) and any("kl_coef = 0.05" in p for p in problems)


@pytest.fixture(scope="module")
def warm_model():
    return toy.warm_start()


def _actor(warm_model, seed=0):
    return ActorCritic(copy.deepcopy(warm_model[0]), lora_r=4, lora_alpha=2, seed=seed, critic=False)


def test_no_critic_no_value_head_and_the_optimiser_holds_only_the_actor(warm_model):
    ac = _actor(warm_model)
    assert ac.value_head is None and not ac.has_critic and list(ac.model.peft_config) == ["actor"]
    opt = make_optimizer(ac, PPOConfig(**toy.GRPO_SETTINGS))
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == len(ac.adapter_params("actor"))
    with pytest.raises(ValueError, match="critic=True"):
        train_ppo(ac, warm_model[1], RECORDS, RECORDS, toy.FruitScorer(), PPOConfig(updates=1), "unused")


def test_resuming_grpo_equals_one_uninterrupted_run(warm_model, tmp_path):
    settings = {**toy.GRPO_SETTINGS, "batch_size": 4, "group_size": 2, "minibatch_size": 2, "ppo_epochs": 1,
                "max_new_tokens": 8, "eval_every": 2, "eval_size": 2}
    timings = ["t_generate", "t_score", "t_train"]

    def run(updates, out, resume=False):
        ac = _actor(warm_model)
        torch.manual_seed(0)
        log = train_ppo(ac, warm_model[1], RECORDS, RECORDS, toy.FruitScorer(), PPOConfig(**settings, updates=updates),
                        out, resume=resume)
        return ac, log.drop(columns=timings)

    whole, whole_log = run(3, tmp_path / "whole")
    run(2, tmp_path / "split")
    split, split_log = run(3, tmp_path / "split", resume=True)
    pd.testing.assert_frame_equal(split_log, whole_log)
    assert {"zero_var_groups", "full_kl", "list_reward"} <= set(whole_log) and "value_loss" not in whole_log
    mine, theirs = dict(whole.model.named_parameters()), dict(split.model.named_parameters())
    assert all(torch.equal(p, theirs[n]) for n, p in mine.items() if "lora_" in n)
    assert not (tmp_path / "whole" / "critic").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_raises_a_reward_that_pays_for_one_category(warm_model, tmp_path, seed):
    """Functional, per seed: fruit pays, animals do not; the same 32 updates of 8 sampled answers as
    the PPO test, 2 prompts x 4. Bound sized from seeds 0-5 (studies/rl_toy.py), held on each."""
    ac, tok = _actor(warm_model, seed=seed), warm_model[1]
    torch.manual_seed(seed)
    log = train_ppo(ac, tok, RECORDS, RECORDS, toy.FruitScorer(),
                    PPOConfig(**toy.GRPO_SETTINGS, updates=32, eval_every=32, seed=seed), tmp_path)
    ac.use_actor()
    after = toy.sampled_reward(ac.model, tok)
    with ac.model.disable_adapter():
        before = toy.sampled_reward(ac.model, tok)
    assert after["reward"] > before["reward"] + GRPO_MIN_GAIN, (before, after)
    assert after["illegal_pct"] < 25.0 and log["full_kl"].tail(8).mean() < 1.0


GRPO_MIN_GAIN = 0.08


def test_a_checkpoint_from_before_algorithm_existed_still_resumes_at_the_defaults(warm_model, tmp_path):
    import dataclasses
    import json

    from recnb.ppo.loop import load_checkpoint, save_checkpoint

    ac = ActorCritic(copy.deepcopy(warm_model[0]), seed=0)
    cfg = PPOConfig(updates=1)
    settings = json.loads(json.dumps(dataclasses.asdict(cfg)))
    old = {k: v for k, v in settings.items() if k not in ("algorithm", "group_size")}
    save_checkpoint(ac, make_optimizer(ac, cfg), tmp_path, 1, 0.0, [{"update": 1}], old)
    assert load_checkpoint(ac, make_optimizer(ac, cfg), tmp_path, settings)[0] == 1  # ppo, group_size 4: defaults
    with pytest.raises(ValueError, match="algorithm: None -> 'grpo'"):
        load_checkpoint(ac, make_optimizer(ac, cfg), tmp_path, {**settings, "algorithm": "grpo"})
