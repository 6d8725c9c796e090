"""The playground (notebook 08's logic) on a small run built here: stage 01 of the tiny world, an
untrained SASRec with its top-N, and stage 06's params naming SASRec, Popularity and tiny-random."""

import pytest

from recnb import data, playground, record, sasrec
from recnb.tasks import Intent


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs") / "toy"
    prepared = data.build_dataset("tiny", seed=0)
    data.write_prepared(prepared, root / "01_data_duckdb")
    cfg = sasrec.SASRecConfig(max_len=10, hidden=16, blocks=1, heads=1, epochs=1, top_n=30)
    model = sasrec.build_sasrec(prepared.items, cfg)
    (root / "02_sasrec").mkdir()
    sasrec.save_sasrec(model, root / "02_sasrec" / "sasrec.pt")
    sasrec.build_teacher_topk(model, prepared.splits, top_n=30).to_parquet(root / "02_sasrec" / "teacher_topk.parquet")
    (root / "06_eval").mkdir()
    record.write_json(root / "06_eval" / "params.json", {
        "models": {"SASRec": "sasrec", "Popularity": "popularity", "base": "base"}, "base_model": "tiny-random",
        "max_new_tokens": 12})
    record.write_json(root / "06_eval" / "metrics.json", {"models": ["SASRec", "Popularity", "base", "base+constrained"]})
    return root


@pytest.fixture(scope="module")
def pg(run_root):
    return playground.Playground(run_root.name, str(run_root.parent))


def test_only_runs_with_a_finished_stage_06_open(run_root, tmp_path):
    assert playground.finished_runs(str(run_root.parent)) == ["toy"]
    with pytest.raises(FileNotFoundError, match="toy"):
        playground.Playground("elsewhere", str(run_root.parent))


def test_requests_check_their_intention_and_typed_titles(pg):
    user = pg.users[0]
    req = pg.for_user(user, Intent("+C", "Horror"), k=5)
    assert req.user_id == user and req.target is not None and len(req.history) > 0
    assert "Horror" in pg.messages(req)[-1]["content"]
    with pytest.raises(ValueError, match="needs m"):
        pg.for_user(user, Intent("<=", "Horror", None))
    with pytest.raises(ValueError, match="needs a category|category"):
        pg.for_user(user, Intent("+C", None))
    titles = pg.catalog.title_list(req.history[:2])
    typed = pg.for_titles([titles[0].lower(), "", titles[1]], Intent("I0"), k=3)
    assert typed.history == req.history[:2] and typed.target is None
    with pytest.raises(ValueError, match="'Nope Nope 9'"):
        pg.for_titles(["Nope Nope 9"], Intent("I0"))


def test_rankings_obey_the_intention_and_never_repeat_the_history(pg):
    req = pg.for_user(pg.users[1], Intent("-C", "Horror"), k=6)
    for label in ("SASRec", "Popularity"):
        ans = pg.answer(label, req)
        items = pg.catalog.match_many([t for t, _ in ans.tagged])
        assert len(items) == 6 and not set(items) & set(req.history)
        assert not any(pg.catalog.in_category(i, "Horror") for i in items)
        assert ans.metrics["tcp"] == 0.0 and ans.metrics["correct_count"] == 1
    with pytest.raises(ValueError, match="already catalog-only"):
        pg.answer("SASRec+constrained", req)
    with pytest.raises(KeyError, match="not in this run"):
        pg.answer("v9", req)


def test_an_llm_answers_free_and_constrained_and_the_table_shows_both(pg):
    req = pg.for_user(pg.users[2], Intent("~=", "Comedy", 0.4), k=3)
    free, constrained = pg.compare(req, ["base", "base+constrained"])
    assert isinstance(free.raw, str)  # a random model's text: anything
    items = pg.catalog.match_many([t for t, _ in constrained.tagged])
    assert constrained.tagged and None not in items and not set(items) & set(req.history)  # catalog titles only
    page = playground.to_html(req, [free, constrained], pg.catalog)
    assert "about 40% Comedy" in page and "<th>base+constrained</th>" in page and "CPA" in page
    assert page.count("<tr>") == 1 + max(3, len(free.tagged), len(constrained.tagged)) + 1  # head, positions, metrics


def test_the_panel_wires_the_choices_and_its_button_shows_the_lists(run_root):
    panel = playground.Panel(str(run_root.parent))
    assert panel.run.value == "toy"
    assert list(panel.models.options) == ["SASRec", "Popularity", "base", "base+constrained"]  # the tables' order
    panel.user.value = panel.user.options[3]
    panel.intention.value = "no C (−C)"
    panel.category.value = "Horror"
    panel.k.value = 4
    panel.models.value = ("SASRec", "Popularity")
    panel.button.click()
    assert "no Horror, k = 4" in panel.last_html and "<th>Popularity</th>" in panel.last_html
    panel.source.value = "typed history"
    panel.history.value = "Nothing Like This 7"
    panel.button.click()
    assert "not in the catalog" in panel.last_html  # one line in the output area, no traceback
