"""Actor, critic and reference of stage 05 sharing ONE copy of the SFT model's weights.

peft's multi-adapter model does the sharing: the stage-04 adapter is merged into the base first
(`recnb.llm.load_for_inference`), then two LoRA adapters are added on top of it, `actor` and
`critic` (r=4, alpha=2 in the paper). `set_adapter` picks which one a forward pass uses, and
`disable_adapter()` gives the frozen reference policy (= the SFT model). The critic's value head
is a plain linear layer on the last hidden state; it is in the optimiser (the reference code left
it out) and starts at zero: a randomly initialised head hands the policy advantages of its own (its
value differences between positions), which whitening blows up to unit scale even when no reward
is paid. trl's `selective_log_softmax`/`entropy_from_logits` compute log-probs and entropy.

`set_adapter` also switches `requires_grad` to the active adapter only, so the PPO step runs the
actor's and the critic's backward passes one after the other, each with its adapter active.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from recnb import llm

ACTOR, CRITIC = "actor", "critic"
VALUE_HEAD_FILE = "value_head.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"


class ActorCritic(nn.Module):
    """The SFT model with `actor` and `critic` LoRA adapters and a value head.

    Args:
        sft_model: base model with the SFT adapter already merged (its weights stay frozen).
        critic: False for critic-free RL (`recnb.ppo.grpo`): no critic adapter, no value head.
        lora_r: LoRA rank of both adapters.
        lora_alpha: LoRA alpha of both adapters.
        seed: initialises the adapters and the value head without touching the global RNG.
        bf16: run the log-prob and value passes under bf16 autocast (weights stay fp32; log-probs
            are taken in fp32): ~40% less peak memory on CPU, not faster there. Generation stays
            fp32: autocast re-casts the frozen weights at every decoding step. On a CPU without
            AVX-512 it stays off, with a warning (`llm.cpu_bf16_fast`).
    """

    def __init__(self, sft_model: PreTrainedModel, lora_r: int = 4, lora_alpha: int = 2, seed: int = 0,
                 bf16: bool = False, critic: bool = True):
        super().__init__()
        on_cpu = next(sft_model.parameters()).device.type == "cpu"  # bf16 on a CPU without AVX-512: ~13x slower
        self.bf16 = bf16 and (not on_cpu or llm.cpu_bf16_or_fp32("PPO bf16 autocast"))
        self.has_critic = critic
        cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                         bias="none", task_type="CAUSAL_LM")
        with torch.random.fork_rng(devices=[]), llm.peft_quiet():
            torch.manual_seed(seed)
            self.model: PeftModel = get_peft_model(sft_model, cfg, adapter_name=ACTOR)
            self.value_head = None
            if critic:
                self.model.add_adapter(CRITIC, cfg)
                self.value_head = nn.Linear(sft_model.config.hidden_size, 1)
                nn.init.zeros_(self.value_head.weight)
                nn.init.zeros_(self.value_head.bias)
                self.value_head.to(next(sft_model.parameters()).device)
        self.model.set_adapter(ACTOR)
        self.model.eval()  # no dropout anywhere: rollout and update log-probs must agree exactly

    def autocast(self) -> torch.autocast:
        """bf16 autocast on the model's device when `bf16`, else a no-op context."""
        device = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=self.bf16)

    def adapter_params(self, name: str) -> list[nn.Parameter]:
        """The LoRA parameters of one adapter (`actor` or `critic`)."""
        return [p for n, p in self.model.named_parameters() if f".{name}." in n and "lora_" in n]

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, resp_len: int) -> torch.Tensor:
        """Last hidden states `(B, T, H)` at the positions that predict the `resp_len` response tokens."""
        # Same positions as generate() computes for left-padded prompts.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        decoder = self.model.get_base_model().get_decoder()
        with self.autocast():
            out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state[:, -resp_len - 1:-1]

    def _logits(self, input_ids, attention_mask, resp_len: int, temperature: float) -> torch.Tensor:
        """Temperature-scaled fp32 logits `(B, T, V)` at the positions predicting the response tokens."""
        hidden = self._hidden(input_ids, attention_mask, resp_len)
        # lm_head only on response positions: the prompt's logits are never needed.
        with self.autocast():
            logits = self.model.get_base_model().get_output_embeddings()(hidden)
        return logits.float() / temperature

    def _token_logps(self, input_ids, attention_mask, response_ids, temperature, entropy: bool, ref=None):
        logits = self._logits(input_ids, attention_mask, response_ids.shape[1], temperature)
        logp = selective_log_softmax(logits, response_ids)
        ent = entropy_from_logits(logits) if entropy else None
        if ref is None:
            return logp, ent, None
        full = logits.log_softmax(-1)
        return logp, ent, (full.exp() * (full - ref)).sum(-1)

    def policy_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_ids: torch.Tensor,
                     temperature: float, entropy: bool = True, full_kl: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Actor log π of the sampled response tokens `(B, T)`, per-token entropy and full KL.

        Logits are divided by the sampling temperature, so π is the distribution tokens were drawn from.
        With `full_kl`, the third value is the exact KL(π ‖ π_ref) over the whole vocabulary at each
        position, differentiable in π (one extra no-grad reference pass): unlike the sampled-token
        penalty in the reward, it pulls back every token's probability, including the list's format
        tokens that no reward pays for.
        """
        ref = None
        if full_kl:
            with torch.no_grad(), self.model.disable_adapter():
                ref = self._logits(input_ids, attention_mask, response_ids.shape[1], temperature).log_softmax(-1)
        self.model.set_adapter(ACTOR)
        return self._token_logps(input_ids, attention_mask, response_ids, temperature, entropy, ref)

    @torch.no_grad()
    def reference_logps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_ids: torch.Tensor,
                        temperature: float) -> torch.Tensor:
        """log π_ref of the response tokens under the SFT model (every adapter disabled)."""
        with self.model.disable_adapter():
            return self._token_logps(input_ids, attention_mask, response_ids, temperature, entropy=False)[0]

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, resp_len: int) -> torch.Tensor:
        """Critic values `(B, T)`: V of the state before each response token.

        Leaves the critic adapter active (and alone trainable) so the value loss can backpropagate;
        `use_actor()` switches back.
        """
        self.model.set_adapter(CRITIC)
        hidden = self._hidden(input_ids, attention_mask, resp_len)
        return self.value_head(hidden.float()).squeeze(-1)

    def use_actor(self) -> None:
        """Make the actor adapter the active one (for generation and log-probs)."""
        self.model.set_adapter(ACTOR)

    def save_adapter(self, name: str, dest: Path) -> Path:
        """Write one adapter as a standard peft folder (`adapter_config.json` + safetensors).

        The critic folder also gets the value head. The files are those `PeftModel.from_pretrained`
        reads, so `recnb.llm.load_for_inference` can merge the actor like any adapter.
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        self.model.peft_config[name].save_pretrained(str(dest))
        state = get_peft_model_state_dict(self.model, adapter_name=name)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(dest / ADAPTER_FILE))
        if name == CRITIC:
            save_file({k: v.detach().cpu() for k, v in self.value_head.state_dict().items()}, str(dest / VALUE_HEAD_FILE))
        return dest

    def load_adapter(self, name: str, src: Path) -> None:
        """Load weights written by `save_adapter` into adapter `name` (and the value head for the critic)."""
        src = Path(src)
        if not (src / ADAPTER_FILE).exists():
            raise FileNotFoundError(f"{src / ADAPTER_FILE} missing; the checkpoint is incomplete, rerun with resume=False")
        result = set_peft_model_state_dict(self.model, load_file(str(src / ADAPTER_FILE)), adapter_name=name)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{src}: adapter weights do not fit this model ({result.unexpected_keys[:2]}...)")
        if name == CRITIC:
            self.value_head.load_state_dict(load_file(str(src / VALUE_HEAD_FILE)))
        self.model.set_adapter(ACTOR)
