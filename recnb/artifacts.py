"""The artifact contract: every column and file name a stage writes or reads (CONTRACTS.md).

Modules and notebooks name files only through these constants, so a stage and its readers cannot
drift apart. Grouped by the stage that writes them.
"""

# columns of stage 01's tables (and of every frame keyed by them)
USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
POSITION = "position"
TITLE = "title"
CATEGORIES = "categories"
POPULARITY = "popularity"
TRAIN_ITEMS = "train_items"
VALID_ITEM = "valid_item"
TEST_ITEM = "test_item"

# every stage
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"  # written last: marks the stage complete
INPUTS_FILE = "inputs.json"  # digest of every upstream stage dir read
MANIFEST_FILE = "manifest.json"  # SHA-256 of every file the stage wrote
STATS_FILE = "stats.json"

# 01_data_duckdb
INTERACTIONS_FILE = "interactions.parquet"
ITEMS_FILE = "items.parquet"
SPLITS_FILE = "splits.parquet"

# 02_sasrec
SASREC_FILE = "sasrec.pt"
TEACHER_FILE = "teacher_topk.parquet"
TRAIN_LOG_FILE = "train_log.csv"  # also stage 04's

# 03_instructions (JSONL, one instruction record per line)
SFT_TRAIN_FILE = "sft_train.jsonl"
SFT_TRAIN_PALR_FILE = "sft_train_palr.jsonl"
SFT_VALID_FILE = "sft_valid.jsonl"
RL_PROMPTS_FILE = "rl_prompts.jsonl"
TEST_PROMPTS_FILE = "test_prompts.jsonl"

# 04_sft_unsloth and 05_ppo
ADAPTER_DIR = "adapter"  # peft adapter (05: the best actor)
SFT_SETTINGS_FILE = "sft_settings.json"  # inside adapter/
VALID_ANSWERS_FILE = "valid_answers.parquet"
ADAPTER_LAST_DIR = "adapter_last"
CRITIC_DIR = "critic"
CHECKPOINT_DIR = "checkpoint"  # holds actor/, critic/, state.pt, settings.json and the log so far
CHECKPOINT_STATE_FILE = "state.pt"
CHECKPOINT_SETTINGS_FILE = "settings.json"
PPO_LOG_FILE = "ppo_log.csv"
REWARD_CHECK_FILE = "reward_check.csv"  # the last actor against the SFT start (only with reward_check > 0)

# 06_eval
PREDICTIONS_FILE = "predictions.parquet"
SCORES_FILE = "scores.parquet"
SUMMARY_FILE = "summary.csv"
TABLE_NAMES = ("table2", "table3", "table4", "table5")  # each as .csv and .md

# What a finished stage must hold besides metrics.json, as glob patterns. `recnb.run` treats a stage
# dir missing one as incomplete, so a stage that wrote metrics.json but not a file its readers need
# (a bug, a crash between two writes) is rerun, never reported as up to date. 04's `adapter/` holds
# a LoRA adapter or, with `finetune: full`, the whole model: either way a safetensors file.
REQUIRED_OUTPUTS = {
    "01_data_duckdb": (INTERACTIONS_FILE, ITEMS_FILE, SPLITS_FILE, STATS_FILE),
    "02_sasrec": (SASREC_FILE, TEACHER_FILE),
    "03_instructions": (SFT_TRAIN_FILE, SFT_VALID_FILE, RL_PROMPTS_FILE, TEST_PROMPTS_FILE),
    "04_sft_unsloth": (f"{ADAPTER_DIR}/*.safetensors", VALID_ANSWERS_FILE),
    "05_ppo": (f"{ADAPTER_DIR}/*.safetensors", f"{ADAPTER_LAST_DIR}/*.safetensors", PPO_LOG_FILE),
    "06_eval": (PREDICTIONS_FILE, SCORES_FILE, SUMMARY_FILE),
}
# Stages that also write outside their own dir: 07 saves the figures to `paper_figures/<run>/` beside
# the outputs root (`paths.figures_dir`). Their `outputs_dir` is compared with the recorded one, so a
# run copied to another root reruns them there; every other stage stays up to date when copied.
WRITES_BESIDE_RUN = ("07_case_study",)
