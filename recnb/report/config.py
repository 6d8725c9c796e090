"""Stage 07's parameters (notebooks/07_case_study.ipynb), typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recnb.params import REF_STAGE_DIR, StageConfig, param

MATCHERS = ("fuzzy", "exact")


@dataclass
class ReportConfig(StageConfig):
    """Which models the case tables show, the matcher of every figure, and the PPO log to plot."""

    STAGE: ClassVar[str] = "07_case_study"

    case_models: list = param([], "models shown in the case tables in this order (empty: every model of 06)")
    matcher: str = param("fuzzy", "title matching of figures and cases: fuzzy (paper convention) or exact",
                         choices=MATCHERS)
    ppo_dir: str = param("05_ppo", "stage dir whose ppo_log.csv gives the reward and KL curves; empty: none",
                         ref=REF_STAGE_DIR)
