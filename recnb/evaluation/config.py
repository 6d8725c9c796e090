"""Stage 06's parameters (notebooks/06_eval.ipynb), typed, and the decoding settings they give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recnb.params import REF_MODELS, StageConfig, base_model_problem, param, variant_problem


@dataclass
class EvalConfig(StageConfig):
    """Which models answer the test prompts, how many users, and how answers are decoded."""

    STAGE: ClassVar[str] = "06_eval"

    variant: str = param("", "empty: the main tables (06_eval/); e.g. 'long' writes 06_eval-long/ for a side run")
    models: dict = param({"SASRec": "sasrec", "Popularity": "popularity", "base": "base", "v2": "04_sft_unsloth", "full": "05_ppo"},
                         "table label -> sasrec, popularity, base or a stage dir", ref=REF_MODELS, nonempty=True)
    constrained_models: list = param(["full"], "labels also decoded under the catalog constraint")
    base_model: str = param("tiny-random", "the zero-shot base LLM of the base row (as stage 04 trained on)")
    max_test_users: int = param(8, "users drawn per test group, among those with a prompt in it (0 means all)", lo=0)
    shared_users: bool = param(False, "every test group takes the same seeded users where it has them (twins then "
                               "repeat I0's prompts, answered once); false: each group draws its own")
    all_i0_users: bool = param(False, "the I0 group (Table 2's HR and NDCG, I0's illegal items, start_effects) asks every "
                               "test user; the other groups keep max_test_users")
    batch_size: int = param(16, "prompts per generate batch", lo=1)
    max_new_tokens: int = param(96, "answer budget in tokens (15 titles need about 150 on ml-100k)", lo=1)
    max_prompt_tokens: int = param(512, "longer prompts lose their oldest history items", lo=16)
    dtype: str = param("auto", "weights while decoding: auto (fp32 on CPU), bfloat16 (about 2x faster on an AVX-512 "
                       "CPU; float32 on others: llm.cpu_bf16_fast) or float32",
                       choices=("auto", "float32", "bfloat16"))
    stop_past_k: bool = param(True, "a row stops once it lists more than its k items (no metric changes)")
    forbid_history: bool = param(True, "constrained decoding also forbids the items shown in the prompt")
    bootstrap_resamples: int = param(1000, "resamples of the users behind every 95 % interval (0: no intervals)", lo=0)
    fuzzy: bool = param(True, "headline matcher: fuzzy (paper convention) or exact, both are written")
    generalization: bool = param(True, "MMLU and GSM8K via lm-eval when its datasets are reachable")

    @classmethod
    def check_together(cls, values) -> list[str]:
        problems = [variant_problem(values["variant"]), base_model_problem(values["base_model"])]
        models = values["models"]
        bad = [label for label, src in models.items() if not isinstance(label, str) or not isinstance(src, str)]
        if bad:
            problems.append(f"models: {bad[0]!r} must map a label to 'sasrec', 'popularity', 'base' or a stage dir name")
        rankers = [m for m in values["constrained_models"] if models.get(m) in ("sasrec", "popularity")]
        if rankers:
            problems.append(f"constrained_models: {rankers[0]!r} is a ranking ({models[rankers[0]]}), not an LLM; "
                            "only LLM rows are decoded under the catalog constraint")
        unknown = [m for m in values["constrained_models"] if m not in models]
        if unknown:
            problems.append(f"constrained_models = {values['constrained_models']!r}: {unknown[0]!r} is not a label "
                            f"of models ({', '.join(models)})")
        return [p for p in problems if p]
