"""Stage 03's parameters (notebooks/03_instructions.ipynb), typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recnb.params import StageConfig, base_model_problem, param


@dataclass
class InstructionConfig(StageConfig):
    """How many samples of each kind to draw, and the prompt-length check."""

    STAGE: ClassVar[str] = "03_instructions"

    i0_per_user: float = param(1.0, "I0 train samples per user (Table 7: one)", lo=0)
    i1_per_user: float = param(1.0, "I1 train samples per user, alternating +C and -C", lo=0)
    i1_minus_share: float = param(0.5, "share of those I1 samples that are -C, spread evenly (paper: half)",
                                  lo=0, hi=1)
    i1_cut_max: int = param(0, "SFT I1 samples end a random 0..N items before the user's train target (the "
                            "item there their target, the teacher's ranking as is), so not every sample of a "
                            "user ends on one item; not in the paper; 0: none", lo=0)
    i2_per_user: float = param(1.0, "I2 train samples per user, cycling at-most, at-least, about m", lo=0)
    i3_per_item: float = param(1.0, "I3 train samples per catalog item, alternating +C and -C", lo=0)
    candidate_fraction: float = param(0.25, "share of I0, I1, I3 train samples in the select-from-candidates variant",
                                      lo=0, hi=1)
    n_candidates: int = param(20, "candidates shown in that variant (the label plus random items)", lo=1)
    catalog_passes: int = param(0, "times each (item, genre) pair is listed in I1+C catalog lists added to "
                                "sft_train (not in the paper; 0: none)", lo=0)
    catalog_top: int = param(0, "catalog lists cover the N most popular items; 0: every item", lo=0)
    catalog_list_len: int = param(20, "titles per catalog list at most (its k; a genre's last list may be shorter)",
                                  lo=1, hi=50)
    catalog_minus_share: float = param(0.0, "share of the catalog lists that are I1-C (\"no C\", C picked as the "
                                       "test's I1-C picks it, titles outside C), added after the I1+C ones; 0: none",
                                       lo=0, hi=0.9)
    catalog_minus_teacher: int = param(0, "the I1-C catalog lists draw their titles among the teacher's N best "
                                       "items outside C and the history (N above catalog_list_len), in random order; 0: "
                                       "among every catalog_top item at random", lo=0)
    catalog_history_len: int = param(0, "catalog lists show only the last N items of the drawn history (fewer "
                                     "tokens per list, the same titles taught); 0: the whole history, as the "
                                     "paper's prompts", lo=0)
    valid_per_type: int = param(16, "valid samples of each of I0, I1+C, I1-C, I2 about valid_m (paper: 320)", lo=0)
    valid_m: float = param(0.5, "proportion asked by the valid I2 samples (paper: 50%)", lo=0, hi=1, lo_open=True,
                           hi_open=True)
    rl_per_user: float = param(1.0, "RL prompts per train user, tasks cycling over the RL tasks", lo=0)
    test_max_users: int = param(0, "test users drawn for the test prompts; 0 means all", lo=0)
    sharegpt_path: str = param("", "ShareGPT-style JSON for I4; empty means no I4")
    sharegpt_fraction: float = param(0.0, "share of I4 in the SFT train set (paper: 0.5)", lo=0, hi=1, hi_open=True)
    max_history: int = param(10, "history items shown in PALR prompts", lo=1)
    base_model: str = param("tiny-random", "tokenizer for the length check")
    max_prompt_tokens: int = param(512, "warn when prompts are longer", lo=16)
    n_shown: int = param(1, "rendered samples shown per task", lo=0)

    @classmethod
    def check_together(cls, values) -> list[str]:
        problems = [p for p in [base_model_problem(values["base_model"])] if p]
        if values["sharegpt_fraction"] > 0 and not values["sharegpt_path"]:
            problems.append("sharegpt_fraction > 0 needs sharegpt_path (a ShareGPT-style JSON)")
        for key in ("catalog_top", "catalog_minus_share", "catalog_history_len"):  # options of the catalog lists
            if values[key] and not values["catalog_passes"]:
                problems.append(f"{key} is set but catalog_passes = 0 writes no catalog list; set catalog_passes "
                                f"(e.g. 20) or drop {key}")
        if values["catalog_minus_teacher"] and not values["catalog_minus_share"]:
            problems.append("catalog_minus_teacher is set but catalog_minus_share = 0 writes no I1-C catalog list; "
                            "set catalog_minus_share (e.g. 0.25) or drop catalog_minus_teacher")
        if 0 < values["catalog_minus_teacher"] <= values["catalog_list_len"]:
            problems.append(f"catalog_minus_teacher = {values['catalog_minus_teacher']} is not above catalog_list_len = "
                            f"{values['catalog_list_len']}: every I1-C catalog list of a user would hold the same "
                            "titles; set it above (e.g. 2 x catalog_list_len) or to 0")
        return problems
