"""Stage 01: loaders on fixtures in the real raw formats, k-core, split, determinism, bad input."""

import gzip
import hashlib
import shutil
import zipfile

import duckdb
import pandas as pd
import pytest

from recnb import data
from recnb.data import build, sources
from recnb.data.sources import DataError


def test_grouplens_folder_and_zip_agree(fixtures_dir, tmp_path):
    inter, items = sources.read_ml100k(fixtures_dir / "ml-100k")
    assert len(inter) == 8 * 7 + 1 and len(items) == 12
    toy = items.set_index("item").loc["1"]
    assert toy.title == "Toy Story (1995)" and toy.categories == ["Animation", "Children's", "Comedy"]
    assert items.set_index("item").loc["11"].title == "Les Misérables (1995)"  # latin-1 decoded, article in front
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("u.data", "u.item"):
            zf.write(fixtures_dir / "ml-100k" / name, f"ml-100k/{name}")
    inter2, items2 = sources.read_ml100k(archive)
    pd.testing.assert_frame_equal(inter, inter2)
    pd.testing.assert_frame_equal(items, items2)


@pytest.mark.parametrize("filed, natural", [
    ("Shawshank Redemption, The (1994)", "The Shawshank Redemption (1994)"),
    ("Time to Kill, A (1996)", "A Time to Kill (1996)"),
    ("Postino, Il (1994)", "Il Postino (1994)"),
    ("Homme, L' (1990)", "L'Homme (1990)"),
    ("Good, the Bad and the Ugly, The (1966)", "The Good, the Bad and the Ugly (1966)"),  # only the last comma
    ("City of Lost Children, The (Cité des enfants perdus, La) (1995)",
     "The City of Lost Children (Cité des enfants perdus, La) (1995)"),  # tails stay behind the title
    ("Shining, The", "The Shining"),  # no year
    ("Sex, Lies, and Videotape (1989)", "Sex, Lies, and Videotape (1989)"),  # "and" is no article
    ("Hate (Haine, La) (1995)", "Hate (Haine, La) (1995)"),  # article only inside the alternative title
    ("Theatre, Then (1990)", "Theatre, Then (1990)"),
    ("Net, the (1995)", "Net, the (1995)"),  # articles are matched case-sensitively, as MovieLens writes them
])
def test_natural_title_moves_a_filed_article_to_the_front(filed, natural):
    assert sources.natural_title(filed) == natural


def test_recbole_titles_read_in_natural_order():
    _, items = sources.read_ml100k()
    titles = set(items["title"])
    assert {"The Shawshank Redemption (1994)", "The Usual Suspects (1995)", "Il Postino (1994)"} <= titles
    assert not any(t.split(" (")[0].endswith(", The") for t in titles)


def test_duplicate_titles_made_unique(fixtures_dir):
    prepared = data.build_dataset("ml-100k", fixtures_dir / "ml-100k", user_core=1, item_core=1)
    titles = prepared.items["title"].tolist()
    assert len(set(titles)) == len(titles)
    assert {"Chasing Amy (1997)", "Chasing Amy (1997) [2]"} <= set(titles)


def test_dedup_keeps_earliest(fixtures_dir):
    prepared = data.build_dataset("ml-100k", fixtures_dir / "ml-100k", user_core=1, item_core=1)
    inter = prepared.interactions
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert len(inter) == 8 * 7  # the repeated (user 1, item) pair is gone
    user1 = inter[inter.user_id == 1].sort_values("position")
    assert user1["timestamp"].is_monotonic_increasing and user1["timestamp"].max() < 874965478 + 10**5


def test_steam_fixture(fixtures_dir):
    inter, items = sources.read_steam(fixtures_dir / "steam")
    assert len(inter) == 30
    assert set(inter["user"]) >= {"Chaos Syren", "76561198007483075"}  # user_id wins over username
    by_id = items.set_index("item")
    assert "No Id Bundle" not in set(items["title"])
    assert by_id.loc["761144"].title == "Log Challenge" and by_id.loc["761144"].categories == ["Indie", "Action"]
    assert by_id.loc["761143"].title == "弹炸人2222"
    assert inter["timestamp"].iloc[0] == 1512864000  # 2017-12-10 UTC


def test_movies_tv_fixture(fixtures_dir):
    inter, items = sources.read_movies_tv(fixtures_dir / "movies_tv")
    assert len(inter) == 30
    by_id = items.set_index("item")
    # no category beyond the root, or no title -> dropped
    assert set(by_id.index) == {"0005089540", "0005089541", "0005089542", "0005089543", "0005089544", "0005089545"}
    assert by_id.loc["0005089543"].categories == ["Movies", "Movies, Musicals & Performing Arts", "Movies, Musicals & Performing Arts, Musicals"]
    assert by_id.loc["0005089544"].title == "Barefoot Contessa"  # HTML stripped


def test_category_paths():
    assert sources.category_paths(["Movies & TV"]) == []
    assert sources.category_paths(["Movies & TV", "A", " ", "B"]) == ["A", "A, B"]


def test_k_core_is_stable_and_exact():
    # item x has 2 users; with item_core=2 it stays only while both users survive user_core=3.
    raw = pd.DataFrame(
        [("u1", "a", 1), ("u1", "b", 2), ("u1", "x", 3), ("u2", "a", 1), ("u2", "b", 2), ("u2", "c", 3),
         ("u3", "x", 1), ("u3", "c", 2)],
        columns=["user", "item", "timestamp"],
    )
    con = duckdb.connect()
    con.register("raw", raw)
    con.execute("CREATE TABLE inter AS SELECT * FROM raw")
    # u3 (2 items) goes -> x and c fall to 1 user and go -> u1 = u2 = {a, b}: 2 < 3 items -> nothing left
    with pytest.raises(DataError, match="leaves no interactions"):
        build.k_core(con, user_core=3, item_core=2)
    con.execute("DELETE FROM inter; INSERT INTO inter SELECT * FROM raw")
    build.k_core(con, user_core=2, item_core=1)  # users always need 3 (leave-one-out): u3 goes, the rest stays
    left = con.execute("SELECT user, string_agg(item, '' ORDER BY item) FROM inter GROUP BY user ORDER BY user").fetchall()
    assert left == [("u1", "abx"), ("u2", "abc")]


def test_k_core_that_leaves_nothing_is_an_error(fixtures_dir):
    with pytest.raises(DataError, match="leaves no interactions; lower user_core"):
        data.build_dataset("ml-100k", fixtures_dir / "ml-100k", user_core=50, item_core=5)


def test_split_leave_one_out_no_leaks():
    prepared = data.build_dataset("tiny", seed=0)
    inter, splits = prepared.interactions, prepared.splits
    assert splits["user_id"].is_unique and len(splits) == inter["user_id"].nunique()
    for row in splits.itertuples():
        seq = inter[inter.user_id == row.user_id].sort_values("position")["item_id"].tolist()
        assert row.train_items == seq[:-2] and row.valid_item == seq[-2] and row.test_item == seq[-1]
        assert row.valid_item not in row.train_items and row.test_item not in row.train_items
    assert prepared.items["item_id"].tolist() == list(range(1, len(prepared.items) + 1))
    train_count = sum(len(s) for s in splits["train_items"])
    assert prepared.items["popularity"].sum() == train_count  # popularity counts train only


def test_tiny_is_deterministic_to_the_byte(tmp_path):
    digests = []
    for k in range(2):
        out = data.write_prepared(data.build_dataset("tiny", seed=3), tmp_path / str(k))
        digests.append([hashlib.sha256((out / f).read_bytes()).hexdigest() for f in sorted(p.name for p in out.iterdir())])
    assert digests[0] == digests[1]
    assert data.build_dataset("tiny", seed=4).interactions.shape != (0, 0)


def test_write_then_load_round_trip(tmp_path):
    prepared = data.build_dataset("tiny")
    data.write_prepared(prepared, tmp_path)
    back = data.load_prepared(tmp_path, dataset="tiny")
    assert back.stats == prepared.stats
    pd.testing.assert_frame_equal(back.splits, prepared.splits)
    assert back.items["categories"].tolist() == prepared.items["categories"].tolist()
    with pytest.raises(DataError, match="holds dataset 'tiny', not 'ml-100k'"):
        data.load_prepared(tmp_path, dataset="ml-100k")


@pytest.mark.parametrize("dataset", ["steam", "movies_tv"])
def test_missing_raw_file_names_it(tmp_path, dataset):
    with pytest.raises(DataError, match=r"\.json\.gz: not found; download"):
        data.build_dataset(dataset, tmp_path)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'ml-1m'"):
        data.build_dataset("ml-1m")


def test_truncated_gzip_and_bad_line(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "steam", tmp_path, dirs_exist_ok=True)
    blob = (tmp_path / "steam_reviews.json.gz").read_bytes()
    (tmp_path / "steam_reviews.json.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        sources.read_steam(tmp_path)
    with gzip.open(tmp_path / "steam_reviews.json.gz", "wt") as fh:
        fh.write("{'username': 'a', 'product_id': '1', 'date': '2017-01-01'}\n{'username': 'b', oops\n")
    with pytest.raises(DataError, match=r"steam_reviews\.json\.gz:2: line does not parse"):
        sources.read_steam(tmp_path)
    with gzip.open(tmp_path / "steam_reviews.json.gz", "wt") as fh:
        fh.write("{'username': 'a', 'date': '2017-01-01'}\n")
    with pytest.raises(DataError, match=r":1: missing key\(s\) product_id"):
        sources.read_steam(tmp_path)


def test_grouplens_bad_item_line(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "ml-100k", tmp_path, dirs_exist_ok=True)
    with open(tmp_path / "u.item", "a", encoding="latin-1") as fh:
        fh.write("13|Broken (1999)|01-Jan-1999\n")
    with pytest.raises(DataError, match=r"u\.item:13: 3 fields, expected 24"):
        sources.read_ml100k(tmp_path)


@pytest.mark.parametrize("line, message", [
    ("1\t2\t3\tnotatime", r"u\.data:2: user, item and timestamp must be integers, got '1', '2', 'notatime'"),
    ("1\t2\t3\t881250949\t7", r"u\.data:2: 5 tab-separated fields, expected 4"),
])
def test_grouplens_bad_data_line_names_file_and_line(fixtures_dir, tmp_path, line, message):
    shutil.copytree(fixtures_dir / "ml-100k", tmp_path, dirs_exist_ok=True)
    first = (tmp_path / "u.data").read_text(encoding="latin-1").splitlines()[0]
    (tmp_path / "u.data").write_text(first + "\n" + line + "\n", encoding="latin-1")
    with pytest.raises(DataError, match=message):
        sources.read_ml100k(tmp_path)


@pytest.mark.parametrize("name", ["u.data", "u.item"])
def test_an_empty_ml100k_file_is_named(fixtures_dir, tmp_path, name):
    shutil.copytree(fixtures_dir / "ml-100k", tmp_path, dirs_exist_ok=True)
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=rf"{name}: empty file; re-extract"):
        data.build_dataset("ml-100k", tmp_path)


@pytest.mark.parametrize("dataset, file", [("steam", "steam_reviews.json.gz"), ("steam", "steam_games.json.gz"),
                                           ("movies_tv", "Movies_and_TV_5.json.gz"),
                                           ("movies_tv", "meta_Movies_and_TV.json.gz")])
def test_an_empty_raw_file_is_named_not_blamed_on_the_k_core(fixtures_dir, tmp_path, dataset, file):
    shutil.copytree(fixtures_dir / dataset, tmp_path, dirs_exist_ok=True)
    (tmp_path / file).write_bytes(b"")
    with pytest.raises(DataError, match=rf"{file}: empty file \(0 bytes\); download"):
        data.build_dataset(dataset, tmp_path)
    with gzip.open(tmp_path / file, "wt") as fh:
        fh.write("\n\n")
    with pytest.raises(DataError, match=rf"{file}: holds no records \(2 blank lines\)"):
        data.build_dataset(dataset, tmp_path)


def test_non_utf8_bytes_name_the_line(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "movies_tv", tmp_path, dirs_exist_ok=True)
    path = tmp_path / "Movies_and_TV_5.json.gz"
    lines = gzip.decompress(path.read_bytes()).splitlines()
    with gzip.open(path, "wb") as fh:
        fh.write(lines[0] + b"\n" + lines[1].replace(b"reviewerID", b"review\xffID") + b"\n")
    with pytest.raises(DataError, match=r"Movies_and_TV_5\.json\.gz:2: not UTF-8 text \(invalid start byte"):
        sources.read_movies_tv(tmp_path)


@pytest.mark.parametrize("value", ['"yesterday"', "null", "true"])
def test_movies_tv_bad_review_time_names_file_and_line(fixtures_dir, tmp_path, value):
    shutil.copytree(fixtures_dir / "movies_tv", tmp_path, dirs_exist_ok=True)
    path = tmp_path / "Movies_and_TV_5.json.gz"
    first = gzip.decompress(path.read_bytes()).splitlines()[0].decode()
    with gzip.open(path, "wt") as fh:
        fh.write(first + "\n" + '{"reviewerID": "A", "asin": "B", "unixReviewTime": ' + value + "}\n")
    with pytest.raises(DataError, match=r"Movies_and_TV_5\.json\.gz:2: unixReviewTime .* is not a Unix time"):
        sources.read_movies_tv(tmp_path)


def test_a_category_given_as_a_string_is_refused_not_split_into_letters(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "movies_tv", tmp_path, dirs_exist_ok=True)
    path = tmp_path / "meta_Movies_and_TV.json.gz"
    with gzip.open(path, "wt") as fh:
        fh.write('{"asin": "B1", "title": "Heat", "category": "Movies & TV, Drama"}\n')
    with pytest.raises(DataError, match=r"meta_Movies_and_TV\.json\.gz:1: 'category' is str 'Movies & TV, Drama', "
                                        r"expected a list of category names"):
        sources.read_movies_tv(tmp_path)


def test_unique_titles_never_collides_with_existing_suffix():
    assert data.unique_titles(["A", "A [2]", "A"]) == ["A", "A [2]", "A [3]"]


def test_ml100k_from_recbole_wheel_matches_table1():
    prepared = data.build_dataset("ml-100k")
    assert prepared.stats["users"] == 943 and prepared.stats["items_before_filter"] == 1682
    assert 1300 <= prepared.stats["items"] <= 1400
