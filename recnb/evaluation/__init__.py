"""Stage 06: every model answers the fixed test prompts; Tables 2-5 from the scored answers.

`predict` generates and scores, `constrained` decodes under the catalog-title trie, `tables`
writes the paper's tables, `intervals` the bootstrap intervals over users, `findings` the closing
sentences, `generalization` the MMLU / GSM8K columns.
"""

from recnb.evaluation.config import EvalConfig
from recnb.evaluation.findings import eval_findings
from recnb.evaluation.intervals import bootstrap_intervals, control_effects, paired_delta, start_effects
from recnb.evaluation.predict import (
    ModelSpec,
    load_test_prompts,
    match_predictions,
    metrics_dict,
    predict_all,
    resolve_models,
    score_predictions,
    start_pairs,
    summarise,
    write_outputs,
)
from recnb.evaluation.tables import to_markdown, write_control_effects, write_start_effects, write_tables

__all__ = ["EvalConfig", "ModelSpec", "bootstrap_intervals", "control_effects", "eval_findings", "load_test_prompts",
           "match_predictions", "metrics_dict", "paired_delta", "predict_all", "resolve_models", "score_predictions",
           "start_effects", "start_pairs", "summarise", "to_markdown", "write_control_effects", "write_outputs",
           "write_start_effects", "write_tables"]
