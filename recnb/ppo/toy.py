"""A toy world where an RL learner must visibly learn: pay for one category's titles.

The prompt asks for 3 items; the catalog is 6 fruits and 6 animals. `FruitScorer` pays each legal
fruit 1 and each legal animal 0 (an unknown or repeated title is illegal: -1), and the list reward
is the share of legal fruits among the k slots, so the best possible mean reward is 1.0 and a
policy that names a random 3 of the 12 titles earns about 0.5. `warm_start` teaches a small
Llama (`recnb.tiny_lm.tiny_llama` on a tokenizer fitted to the toy's text) the list format on random
titles first, as SFT does before RL in the paper: the learner then only has to move preferences.

Used by the PPO/GRPO functional tests and `studies/rl_toy.py`, which compares the learners on it.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recnb import llm, tiny_lm
from recnb.answer import parse_titles

FRUIT = ("Apple", "Banana", "Cherry", "Mango", "Peach", "Plum")
ANIMAL = ("Tiger", "Zebra", "Horse", "Otter", "Camel", "Llama")
K = 3
# PPO on the toy (stage 05's knobs): the exact KL to the start in the loss holds the format tokens
# (p ~ 0.999 after the warm start), which otherwise drift and break lists; no entropy bonus.
PPO_SETTINGS = {"batch_size": 8, "minibatch_size": 4, "ppo_epochs": 4, "max_new_tokens": 16, "lr": 1e-2,
                "critic_lr": 3e-2, "kl_coef": 0.05, "kl_loss_coef": 0.2, "ent_coef": 0.0, "target_kl": 0.1,
                "cliprange_value": 0.0, "eval_size": 8}
# GRPO on the toy: the same answers per update (8 = 2 prompts x 4), the same exact KL in the loss; no critic.
GRPO_SETTINGS = {**{k: v for k, v in PPO_SETTINGS.items() if k not in ("critic_lr", "cliprange_value")},
                 "algorithm": "grpo", "group_size": 4, "kl_coef": 0.0}
MESSAGES = [{"role": "system", "content": "You are an expert recommender engine."},
            {"role": "user", "content": f"Recommend {K} items."}]


def records(n: int = 8) -> list[dict]:
    """`n` copies of the toy prompt as stage-03 records (I0, no history, no target)."""
    return [{"task": "I0", "prompt": MESSAGES, "k": K, "intent": {"kind": "I0", "category": None, "m": None},
             "target": None, "history": []} for _ in range(n)]


class FruitScorer:
    """Pays +1 per legal fruit, 0 per legal animal, -1 per unknown or repeated title; R_list = fruit share."""

    def __call__(self, record: dict, titles: list[str]) -> SimpleNamespace:
        seen, legal, item = set(), [], []
        for title in titles:
            ok = title in FRUIT + ANIMAL and title not in seen and len(legal) < record["k"]
            seen.add(title)
            legal.append(ok)
            item.append((1.0 if title in FRUIT else 0.0) if ok else -1.0)
        fruit = sum(r == 1.0 for r in item)
        return SimpleNamespace(legal=legal, item_rewards=item, list_reward=fruit / record["k"])


def sampled_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = 96, seed: int = 99,
                   temperature: float = 0.7) -> dict[str, float]:
    """Mean list reward and % illegal items of `n` answers sampled with a fixed seed.

    Far less noisy than a training batch's reward (8 answers), so two policies can be compared.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        how = llm.Decoding(max_new_tokens=4 * K + 4, batch_size=n, do_sample=True, temperature=temperature)
        answers = llm.generate(model, tokenizer, [MESSAGES] * n, how, progress=False)
    scores = [FruitScorer()(records(1)[0], parse_titles(a)) for a in answers]
    legal = [ok for s in scores for ok in s.legal]
    return {"reward": sum(s.list_reward for s in scores) / n,
            "illegal_pct": 100.0 * (1 - sum(legal) / len(legal)) if legal else 100.0}


def random_answer(rng: random.Random) -> str:
    """A well-formed answer naming K distinct titles drawn from both categories alike."""
    return "\n".join(f"{i}. {t}" for i, t in enumerate(rng.sample(FRUIT + ANIMAL, K), start=1))


def toy_tokenizer() -> PreTrainedTokenizerBase:
    """A BPE tokenizer fitted to the toy's prompt and answers (each title becomes one or two tokens)."""
    rng = random.Random(0)
    return tiny_lm.train_tokenizer([m["content"] for m in MESSAGES] + [random_answer(rng) for _ in range(300)],
                               vocab_size=400)


def warm_start(steps: int = 300, batch_size: int = 16, lr: float = 1e-2, seed: int = 0
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A 2-layer, 64-wide Llama fine-tuned (all weights) on random well-formed answers.

    The completion-only loss teaches the format and 'no repeats' but no preference between fruit
    and animals; it takes ~3 s on one thread. Deterministic for a given `seed`.
    """
    tok = toy_tokenizer()
    model = tiny_lm.tiny_llama(tok, seed=seed)
    prompt = llm.render_prompts(tok, [MESSAGES], 512)[0]
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    rng = random.Random(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            texts = [prompt + random_answer(rng) + tok.eos_token for _ in range(batch_size)]
            batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            logits = model(**batch).logits
            # left padding: every row's answer starts n_prompt tokens after its first real token
            pad = (batch["attention_mask"] == 0).sum(1, keepdim=True)
            pos = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
            answer = (pos >= pad + n_prompt)[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits[:, :-1][answer], batch["input_ids"][:, 1:][answer])
            loss.backward()
            opt.step()
            opt.zero_grad()
    return model.eval(), tok
