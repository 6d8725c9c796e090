"""Stage 05's parameters (notebooks/05_ppo.ipynb), typed: every knob of the PPO loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recnb.params import REF_STAGE_DIR, StageConfig, param, tasks_problem, variant_problem
from recnb.tasks import RL_TASKS

REWARDS = ("full", "list")  # item + list rewards (Ours_full), list reward only (Ours_v3)
ALGORITHMS = ("ppo", "grpo")  # the paper's PPO with a critic; critic-free group-relative (`recnb.ppo.grpo`)
# Settings a resumed run may change (`recnb.ppo.loop.train_ppo`): they do not alter what was trained.
RESUMABLE = ("updates", "resume", "threads", "reward_check")


@dataclass
class PPOConfig(StageConfig):
    """The start model, the prompts, the rewards and the PPO optimisation."""

    STAGE: ClassVar[str] = "05_ppo"

    variant: str = param("", "empty: main path (Ours_full); e.g. 'v3' with reward 'list' writes 05_ppo-v3")
    sft_dir: str = param("04_sft_unsloth", "stage-04 dir (same run) whose SFT model PPO starts from",
                         ref=REF_STAGE_DIR)
    reward: str = param("full", "'full': item + list rewards (Ours_full); 'list': list reward only (Ours_v3)",
                        choices=REWARDS)
    algorithm: str = param("ppo", "'ppo' (the paper: actor + critic, GAE) or 'grpo' (no critic: advantages within "
                           "groups of answers to one prompt)", choices=ALGORITHMS)
    group_size: int = param(4, "grpo: answers sampled per prompt (batch_size / group_size prompts per update)", lo=2)
    tasks: str | list = param("all", "RL prompts trained on: 'all' (paper) or tasks/prefixes", types=(str, list))
    updates: int = param(4, "PPO updates (one rollout batch each)", lo=1)
    batch_size: int = param(8, "answers sampled per update (ppo: one per prompt)", lo=1)
    minibatch_size: int = param(4, "sequences per gradient step", lo=1)
    ppo_epochs: int = param(2, "passes over each rollout batch", lo=1)
    lr: float = param(5e-06, "actor learning rate (paper: 5e-6)", lo=0, lo_open=True)
    critic_lr: float = param(5e-06, "critic LoRA and value head learning rate", lo=0)
    temperature: float = param(0.7, "sampling temperature of rollouts (paper: 0.7)", lo=0, lo_open=True)
    top_k: int = param(0, "top-k sampling; 0: off", lo=0)
    max_new_tokens: int = param(48, "answer tokens sampled per prompt", lo=1)
    max_prompt_tokens: int = param(512, "longer prompts lose their oldest history items", lo=16)
    kl_coef: float = param(0.05, "per-token KL penalty weight against the SFT reference", lo=0)
    kl_loss_coef: float = param(0.0, "> 0: adds this times the exact KL(actor || SFT) to the loss (not in the paper)",
                                lo=0)
    gamma: float = param(1.0, "GAE discount", lo=0, hi=1)
    lam: float = param(0.95, "GAE lambda", lo=0, hi=1)
    cliprange: float = param(0.2, "PPO ratio clip", lo=0, lo_open=True)
    cliprange_value: float = param(0.2, "value clip around the rollout values; <= 0: no clipping")
    vf_coef: float = param(0.5, "value loss weight", lo=0)
    ent_coef: float = param(0.01, "entropy bonus (paper: 0.01)", lo=0)
    max_grad_norm: float = param(1.0, "gradient clipping, per network", lo=0, lo_open=True)
    target_kl: float = param(0.1, "stop an update early once approximate KL exceeds this", lo=0, lo_open=True)
    list_reward_scale: float = param(10.0, "R_list multiplier (paper: 10)", lo=0)
    control_weight: float = param(0.5, "w of the control scores in Eq. 2 and 5 (paper: 0.5)", lo=0, hi=1)
    lora_r: int = param(4, "rank of the actor and critic LoRA (paper: 4)", lo=1)
    lora_alpha: float = param(2, "alpha of the actor and critic LoRA (paper: 2)", types=(int, float), lo=0,
                              lo_open=True)
    bf16: bool = param(False, "bf16 autocast in the log-prob/value passes: less peak memory (on a CPU only with "
                       "AVX-512: llm.cpu_bf16_fast)")
    eval_every: int = param(2, "updates between greedy validation runs", lo=1)
    eval_size: int = param(8, "validation prompts (round-robin over I0, I1, I2 tasks of sft_valid.jsonl)", lo=1)
    reward_check: int = param(0, "after training: answers sampled per validation prompt by the SFT start and by the "
                              "last actor, from one seed, to measure the gain in sampled list reward with its 95 % "
                              "interval (reward_check.csv, metrics.json reward_gain); 0: off", lo=0)
    fuzzy: bool = param(False, "also accept catalog titles within Levenshtein distance 3 (same as stage 06)")
    resume: bool = param(False, "continue from checkpoint/ of an interrupted run instead of starting over")

    @classmethod
    def check_together(cls, values) -> list[str]:
        problems = [variant_problem(values["variant"]), tasks_problem(values["tasks"], RL_TASKS)]
        if values["batch_size"] % values["minibatch_size"]:
            problems.append(f"batch_size = {values['batch_size']} must be a multiple of "
                            f"minibatch_size = {values['minibatch_size']}")
        if values["algorithm"] == "grpo":
            if values["batch_size"] % values["group_size"]:
                problems.append(f"batch_size = {values['batch_size']} must be a multiple of group_size = "
                                f"{values['group_size']} (grpo answers each prompt group_size times)")
            if values["kl_coef"] != 0:
                problems.append(f"kl_coef = {values['kl_coef']}: grpo keeps the KL in the loss (kl_loss_coef); "
                                "set kl_coef = 0")
        if not str(values["sft_dir"]).startswith("04_sft_unsloth"):
            problems.append(f"sft_dir = {values['sft_dir']!r} must name a stage-04 dir (04_sft_unsloth[-variant])")
        return [p for p in problems if p]
