"""Stage 01: raw interactions -> deduplicated, k-core filtered, leave-one-out split (DuckDB SQL).

`load_prepared` is how every later stage reads stage 01's files.
"""

from recnb.data.build import (
    DATASETS,
    Prepared,
    build_dataset,
    category_counts,
    k_core,
    load_prepared,
    prepare,
    read_source,
    split_leave_one_out,
    unique_titles,
    write_prepared,
)
from recnb.data.config import DataConfig
from recnb.data.sources import DataError

__all__ = ["DATASETS", "DataConfig", "DataError", "Prepared", "build_dataset", "category_counts", "k_core",
           "load_prepared", "prepare", "read_source", "split_leave_one_out", "unique_titles", "write_prepared"]
