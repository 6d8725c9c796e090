"""Column and file names shared by every stage (one place, so stages cannot drift apart)."""

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

INTERACTIONS_FILE = "interactions.parquet"
ITEMS_FILE = "items.parquet"
SPLITS_FILE = "splits.parquet"
STATS_FILE = "stats.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"

SYSTEM_PROMPT = "You are an expert recommender engine."
