"""Parsing generated lists and matching titles to the catalog."""

import string

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recnb.answer import normalise_title, parse_lines, parse_titles
from recnb.catalog import Catalog


def catalog(rows) -> Catalog:
    """rows: (item_id, title, categories, popularity)."""
    return Catalog(pd.DataFrame(rows, columns=["item_id", "title", "categories", "popularity"]))


# ---------------------------------------------------------------- parse_titles


def test_numbering_styles_bullets_quotes_and_chatter():
    text = (
        "Sure! Here are 5 movies you may like:\n"
        "1. Heat (1995)\n"
        '2) "Toy Story (1995)"\n'
        "\n"
        "3 - 'Til There Was You (1997)   \r\n"
        "- 4. **Se7en (1995)**\n"
        "#5. “Fargo (1996)”\n"
        "Enjoy!"
    )
    assert parse_titles(text) == [
        "Heat (1995)",
        "Toy Story (1995)",
        "'Til There Was You (1997)",
        "Se7en (1995)",
        "Fargo (1996)",
    ]


def test_unnumbered_lists_keep_every_non_empty_line():
    assert parse_titles("  Heat (1995)\n\n\tFargo (1996)  \n") == ["Heat (1995)", "Fargo (1996)"]
    assert parse_titles("* Heat\n* Fargo\nthat's all") == ["Heat", "Fargo"]


def test_numbers_inside_titles_survive():
    assert parse_titles("1. 2001: A Space Odyssey (1968)\n2. 12 Angry Men (1957)") == [
        "2001: A Space Odyssey (1968)",
        "12 Angry Men (1957)",
    ]
    assert parse_titles("1.5 Million Ways") == ["1.5 Million Ways"]  # a decimal is not numbering


def test_spans_point_at_the_titles():
    text = 'Intro\n1. Heat (1995)\n2. "Fargo (1996)"'
    lines = parse_lines(text)
    assert [text[line.start : line.end] for line in lines] == ["Heat (1995)", "Fargo (1996)"]
    assert [(line.start, line.end) for line in lines] == [(9, 20), (25, 37)]


def test_nasty_inputs():
    assert parse_titles("") == []
    assert parse_titles("\n\n  \n1.\n2)  ") == []
    assert parse_titles(None) == []  # type: ignore[arg-type]
    assert parse_titles("\x00\x01binary\xff") == ["\x00\x01binary\xff"]
    assert len(parse_titles("\n".join(f"{i}. T{i}" for i in range(10_000)))) == 10_000


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1"))))
def test_parse_never_raises(text):
    for line in parse_lines(text):
        assert line.title and text[line.start : line.end] == line.title


ordinary = (
    st.text(string.ascii_letters + string.digits + " ,:;()&!?'.-", min_size=1, max_size=40)
    .map(str.strip)
    .filter(lambda t: t[:1].isalpha())
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ordinary, min_size=1, max_size=20))
def test_numbered_list_round_trips(titles):
    assert parse_titles("\n".join(f"{i}. {t}" for i, t in enumerate(titles, 1))) == titles


# ---------------------------------------------------------------- Catalog

ROWS = [
    (1, "Hear (1995)", ["Drama"], 100),
    (2, "Heat (1995)", ["Action", "Crime"], 1),
    (3, "Heat (1991)", ["Action"], 50),
    (4, "Don't Look Now (1973)", ["Horror"], 5),
    (5, "Abcdefgh", ["Drama"], 0),
]


def test_normalise_title():
    assert normalise_title("  Don’t  LOOK now: (1973) ") == "dont look now 1973"
    assert normalise_title("Face/Off (1997)") == "face off 1997"


def test_exact_match_after_normalisation():
    cat = catalog(ROWS)
    assert cat.match("  HEAT (1995) ") == 2
    assert cat.match("dont look now 1973") == 4
    assert cat.match("Heat (1996)") is None  # no fuzzy unless asked
    assert cat.title(4) == "Don't Look Now (1973)" and len(cat) == 5


def test_fuzzy_takes_the_nearest_not_the_first():
    cat = catalog(ROWS)
    # "heat 1996": "hear 1995" (id 1, first, most popular) is 2 edits, "heat 1995" 1 edit,
    # "heat 1991" 1 edit -> tie between 2 and 3 goes to the more popular id 3
    assert cat.match("Heat (1996)", fuzzy=True) == 3
    assert cat.match("Hear (1996)", fuzzy=True) == 1  # 1 edit from id 1, 2 from the others


def test_fuzzy_distance_limit_is_three():
    cat = catalog(ROWS)
    assert cat.match("Abcdefghxyz", fuzzy=True) == 5  # 3 insertions
    assert cat.match("Abcdefghwxyz", fuzzy=True) is None  # 4
    assert cat.match("", fuzzy=True) is None and cat.match("!!!", fuzzy=True) is None


def test_match_many_agrees_with_match_across_batches():
    cat = catalog(ROWS)
    titles = ["Heat (1996)", "nothing like it", "hear (1995)", "Abcdefghxy"] * 100  # > one rapidfuzz batch
    assert cat.match_many(titles, fuzzy=True) == [3, None, 1, 5] * 100
    assert cat.match_many(titles, fuzzy=False) == [None, None, 1, None] * 100


def test_equal_keys_go_to_the_most_popular():
    cat = catalog([(1, "Heat (1995)", ["A"], 3), (2, "heat: 1995", ["A"], 9)])
    assert cat.match("HEAT 1995") == 2


def test_categories():
    cat = catalog(ROWS)
    assert cat.items_in("Action") == {2, 3}
    assert (
        cat.in_category(2, "Crime") and not cat.in_category(1, "Crime") and not cat.in_category(None, "Crime")
    )
    assert cat.categories == ["Action", "Crime", "Drama", "Horror"]
    with pytest.raises(KeyError, match="'Comedy' is not in the catalog"):
        cat.items_in("Comedy")


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['categories'\]"):
        Catalog(pd.DataFrame({"item_id": [1], "title": ["A"]}))


def test_tiny_dataset_titles_match_themselves():
    from recnb import data

    items = data.build_dataset("tiny", seed=0).items
    cat = Catalog(items)
    ids = items["item_id"].tolist()
    assert cat.match_many(items["title"].tolist()) == ids
    assert cat.match_many(items["title"].str.upper().tolist(), fuzzy=True) == ids
