"""Stage 03: the SFT / RL / test instruction sets of the paper (§2.2), labels augmented by the teacher.

The paper's templates are core (`recnb.prompts`); here `labels` holds the label rules, `specs` one
sample, `build` how many of which and how a sample becomes a record, `sharegpt` the optional I4
chat, and `sets` the stage's entry points re-exported here.
"""

from recnb.instructions.build import FILES
from recnb.instructions.config import InstructionConfig
from recnb.instructions.sets import (
    InstructionSets,
    build_instruction_sets,
    check_labels,
    length_percentiles,
    load_teacher,
    show_samples,
    stage_metrics,
    token_lengths,
    warn_long_prompts,
    write_instruction_sets,
)

__all__ = ["FILES", "InstructionConfig", "InstructionSets", "build_instruction_sets", "check_labels",
           "length_percentiles", "load_teacher", "show_samples", "stage_metrics", "token_lengths",
           "warn_long_prompts", "write_instruction_sets"]
