"""The tiny batch 01→07 through papermill (as CI and `make run` drive it), then the file contracts
of every stage (CONTRACTS.md)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from recnb import paths
from recnb.record import read_json
from recnb.tasks import read_records
from tests.pipeline import lab_browser

RUN = "tiny"


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """The tiny batch through the runner, in a fresh directory; or, where `RECNB_TINY_OUTPUTS` names
    the outputs dir nbval has just filled by running the notebooks (`make test` does so), on top of
    it: the runner then finds the main path up to date and runs only what nbval does not (v1, unless
    `make test`'s head start trained it already, then 06 and 07).
    """
    fresh = os.environ.get("RECNB_TINY_OUTPUTS")
    out = paths.REPO_ROOT / fresh if fresh else tmp_path_factory.mktemp("outputs")
    cmd = [sys.executable, "-m", "recnb.run", str(paths.REPO_ROOT / "params" / "tiny.yaml")]
    # nbval recorded outputs_dir as the notebooks spell it ("outputs"), so pass it the same way; its
    # 06 and 07 lack the v1 row and are stale here: --force reruns them (and nothing up to date)
    cmd += ["--outputs-dir", fresh, "--force"] if fresh else ["--outputs-dir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / RUN


def metrics(run_root, stage):
    return read_json(run_root / stage / "metrics.json")


def test_every_stage_finished_with_params_and_metrics(run_root):
    for stage in paths.STAGES:
        assert (run_root / stage / "metrics.json").exists(), stage
        params = read_json(run_root / stage / "params.json")
        assert params["run"] == RUN and params["dataset"] == "tiny"
        # an executed notebook per stage the runner ran (with RECNB_TINY_OUTPUTS, nbval ran the main path)
        if not os.environ.get("RECNB_TINY_OUTPUTS") or stage in ("06_eval", "07_case_study"):
            assert (run_root / "notebooks" / f"{stage}.ipynb").exists(), stage
    assert (run_root / "notebooks" / "04_sft_unsloth-v1.ipynb").exists()


def test_sft_trained_through_the_backend_this_environment_asks_for(run_root):
    """`make check-gpu-set` forces unsloth (RECNB_UNSLOTH_CPU=1): every SFT stage must have gone
    through it, not silently through the plain trl path; elsewhere none may."""
    want = "unsloth" if os.environ.get("RECNB_UNSLOTH_CPU") == "1" else "trl"
    for stage in ("04_sft_unsloth", "04_sft_unsloth-v1"):
        assert metrics(run_root, stage)["train"]["trainer"] == want, stage


def test_stage01_contract(run_root):
    d = run_root / "01_data_duckdb"
    items = pd.read_parquet(d / "items.parquet")
    splits = pd.read_parquet(d / "splits.parquet")
    inter = pd.read_parquet(d / "interactions.parquet")
    assert list(items.columns) == ["item_id", "title", "categories", "popularity"]
    assert items["title"].is_unique and items["item_id"].tolist() == list(range(1, len(items) + 1))
    assert set(splits.columns) == {"user_id", "train_items", "valid_item", "test_item"}
    assert len(inter) == sum(len(t) + 2 for t in splits["train_items"])
    stats = metrics(run_root, "01_data_duckdb")
    assert stats["users"] == len(splits) and stats["items"] == len(items) and stats["interactions"] == len(inter)


def test_stage02_teacher_contract(run_root):
    d = run_root / "02_sasrec"
    topk = pd.read_parquet(d / "teacher_topk.parquet")
    n_users = len(pd.read_parquet(run_root / "01_data_duckdb" / "splits.parquet"))
    assert topk.groupby("split").size().to_dict() == {"test": n_users, "train": n_users, "valid": n_users}
    for row in topk.head(20).itertuples():
        assert not set(row.topk_items) & set(row.history)  # history masked
        assert list(row.topk_scores) == sorted(row.topk_scores, reverse=True)
    m = metrics(run_root, "02_sasrec")
    assert m["valid"]["ndcg@10"] > m["pop_valid"]["ndcg@10"]  # the teacher beats popularity on tiny
    assert (d / "sasrec.pt").exists()


def test_stage03_instruction_files(run_root):
    d = run_root / "03_instructions"
    fields = {"task", "user_id", "split", "candidates", "prompt", "completion", "k", "intent", "target", "history", "label"}
    files = {name: read_records(d / f"{name}.jsonl")
             for name in ("sft_train", "sft_train_palr", "sft_valid", "rl_prompts", "test_prompts")}
    for name, rows in files.items():
        assert rows and all(fields <= set(r) for r in rows), name
    test = files["test_prompts"]
    assert {"I0", "I1+C", "I1-C", "I2<=20", "I2~=30", "I2>=30", "k11-15"} <= {r["test_group"] for r in test}
    assert all(r["target"] not in r["history"] for r in test if r["target"] is not None)
    assert metrics(run_root, "03_instructions")["label_problems"] == 0


def test_stage04_and_05_adapters_and_logs(run_root):
    assert (run_root / "04_sft_unsloth" / "adapter" / "model.safetensors").exists()  # finetune: full (every weight)
    log = pd.read_csv(run_root / "04_sft_unsloth" / "train_log.csv")
    assert len(log) > 0 and log["loss"].notna().all()
    for sub in ("adapter", "adapter_last", "critic"):
        assert (run_root / "05_ppo" / sub / "adapter_model.safetensors").exists(), sub
    assert (run_root / "05_ppo" / "critic" / "value_head.safetensors").exists()
    ppo = pd.read_csv(run_root / "05_ppo" / "ppo_log.csv")
    assert {"list_reward", "item_reward", "kl", "entropy", "policy_loss", "value_loss", "clip_frac", "explained_var"} <= set(ppo.columns)
    assert ppo["list_reward"].notna().any()


def test_stage06_tables_and_stage07_figures(run_root):
    d = run_root / "06_eval"
    pred = pd.read_parquet(d / "predictions.parquet")
    assert {"SASRec", "Popularity", "base", "v2", "full", "full+constrained"} <= set(pred["model"])
    for t in ("table2", "table3", "table4", "table5"):
        assert len(pd.read_csv(d / f"{t}.csv")) > 0 and "|" in (d / f"{t}.md").read_text()
    case = metrics(run_root, "07_case_study")
    assert (run_root / "07_case_study" / "case_I1.md").read_text().strip()
    assert len(case["figures"]) >= 4
    for files in case["figures"].values():
        assert all(Path(f).stat().st_size > 0 for f in files)  # PNG + PDF written


# ------------------------------------------------------------------ the paper in miniature (issue 19)
# Stage 06's test prompts, fuzzy matching (the paper's convention), 50 users per test group and all ~400
# in I0 (`all_i0_users`). Each bound below held on every seed of the tiny batch tried (0-9: docs/RESULTS.md,
# `studies/tiny_seeds.py`; the I0 figures quoted are those of the 400 users, 2026-12-07 seventh entry),
# with the room noted; where an issue-19 target did not hold on every seed the bound is the weaker one that does,
# and RESULTS.md says so. A change that stops SFT from learning fails here.


def summary(run_root, model, group):
    s = pd.read_csv(run_root / "06_eval" / "summary.csv")
    row = s[(s["matcher"] == "fuzzy") & (s["model"] == model) & (s["test_group"] == group)]
    assert len(row) == 1, (model, group)
    return row.iloc[0]


def test_every_test_group_has_50_users(run_root):
    s = pd.read_csv(run_root / "06_eval" / "summary.csv")
    assert (s.loc[s["model"] == "v2", "n_lists"] >= 50).all()
    i0 = s[(s["model"] == "v2") & (s["test_group"] == "I0") & (s["matcher"] == "fuzzy")]["n_lists"]
    assert (i0 >= 390).all(), i0  # all_i0_users: every test user (399-400 on seeds 0-9)


def test_every_figure_has_its_interval_and_every_control_its_paired_effect(run_root):
    s = pd.read_csv(run_root / "06_eval" / "summary.csv")
    for figure in ("hr", "tcp_pct", "cpa_pct", "non_exist_pct"):
        rows = s.dropna(subset=[figure, f"{figure}_lo", f"{figure}_hi"])
        assert len(rows) > 0, figure
        assert ((rows[f"{figure}_lo"] <= rows[figure] + 1e-9) & (rows[figure] <= rows[f"{figure}_hi"] + 1e-9)).all(), figure
    effects = pd.read_csv(run_root / "06_eval" / "control_effects.csv").set_index(["model", "test_group"])
    e = effects.loc[("v2", "I1+C")]
    assert e["delta"] == pytest.approx(summary(run_root, "v2", "I1+C")["tcp_pct"]
                                      - summary(run_root, "v2", "I1+C_nocontrol")["tcp_pct"])
    assert e["delta_lo"] > 0, e.to_dict()  # the sentence's effect on "more C" is beyond the sample's noise


def test_sft_teaches_which_titles_are_in_which_category(run_root):
    probe = metrics(run_root, "04_sft_unsloth")["category_auc"]
    assert probe["sft"] >= probe["base"] + 0.2, probe  # seeds 0-9 (32 valid "more C" users, 16 before valid_per_type 64): +0.28 to +0.56


def test_sft_learns_the_answer_format_and_the_catalog(run_root):
    i0 = summary(run_root, "v2", "I0")
    assert i0["correct_count_pct"] >= 80, i0["correct_count_pct"]  # seeds 0-9, 400 users: 97.5 to 100
    assert i0["non_exist_pct"] <= 20, i0["non_exist_pct"]  # 0 to 0.4
    assert i0["hr"] > 0, i0["hr"]  # 0.20 to 0.35 (SASRec 0.67 on seed 0)
    # fitted (24 epochs), v2 repeats 20-30 % of its titles: 19.8 to 29.6 (4 epochs, 50 users: 59-76)
    assert i0["repeat_item_pct"] <= 50, i0["repeat_item_pct"]
    base = summary(run_root, "base", "I0")  # the untrained base cannot: SFT is what taught it
    # it lists made-up titles (NonExist 100 % on seeds 1-3) or none at all: on seeds 0 and 4 every answer
    # is EOS at once, so NonExist has no item to count (NaN) and CorrectCount is 0
    made_up = base["non_exist_pct"]
    assert (pd.isna(made_up) or made_up >= 80) and base["correct_count_pct"] <= 20, (made_up, base["correct_count_pct"])


def test_sft_on_control_tasks_obeys_more_c(run_root):
    v2, twin = summary(run_root, "v2", "I1+C")["tcp_pct"], summary(run_root, "v2", "I1+C_nocontrol")["tcp_pct"]
    base, v1 = summary(run_root, "base", "I1+C")["tcp_pct"], summary(run_root, "v1", "I1+C")["tcp_pct"]
    assert v2 >= base + 20, (v2, base)  # seeds 0-4: +99.4, +97.8, +96.8, +100.0, +97.8
    assert v2 > v1 + 10, (v2, v1)  # +59.4, +48.0, +56.6, +43.4, +60.2: SFT on I0 alone does not teach it
    assert v2 >= twin + 10, (v2, twin)  # +25.6, +37.6, +24.4, +43.0, +32.2 (5-9: +24.4 to +42.2): the sentence moves the list


def test_sft_on_control_tasks_obeys_no_c(run_root):
    """Issue 19 asks v2's TCP(−C) ≤ its no-control twin − 10. With the tiny batch's "no C" catalog lists
    (stage 03: under a train user's history, random titles outside C, which SFT cannot remember per
    user) it held on seeds 0-4: −45.0, −11.8, −27.0, −30.2 and −19.0 points on stage 06's 50 users
    (RESULTS.md; with the tokenizer before the line breaks were one token with their number, −48.0,
    −34.0, −16.0, −37.6, −22.4, and −31.6, −35.3, −15.0, −39.0, −28.8 on all the test users,
    `studies/negation_fit.py`; without those lists, +3.4, −25.2, −11.6, −5.6, +1.8 on 50 users). A
    50-user figure moved up to 16.4 points from the all-user one, so the bound asserted is the
    direction, with ≥ 11.8 points of room on every seed;
    and v2 reads "no C" as the opposite of "more C", which the control tasks taught, not I0 alone (the
    paper's v1 → v2 step): v1 answers both sentences alike. A model that only matched the category's
    name fails both."""
    e = pd.read_csv(run_root / "06_eval" / "control_effects.csv").set_index(["model", "test_group"]).loc[("v2", "I1-C")]
    assert e["delta"] < 0, e.to_dict()  # seeds 0-4: −45.0, −11.8, −27.0, −30.2, −19.0; 5-9: −30.8, −24.0, −32.4, −30.4, −38.6

    def gap(model):
        return summary(run_root, model, "I1+C")["tcp_pct"] - summary(run_root, model, "I1-C")["tcp_pct"]

    assert gap("v2") >= 30, gap("v2")  # seeds 0-4: 95.2, 69.4, 89.6, 87.8, 86.6
    assert gap("v2") >= gap("v1") + 15, (gap("v2"), gap("v1"))  # v2 − v1: 98.4, 69.0, 112.6, 80.8, 105.8


def test_rl_ends_with_no_more_illegal_items_than_its_start(run_root):
    """Issue 19 asks that full (PPO) end with no more illegal I0 items (Repeat + NonExist + InHistory) than
    v2 and that its reward rise. Stage 06 asks I0 of all ~400 test users and pairs full with v2 user by
    user (`start_effects.csv`); stage 05 keeps the checkpoint with the best greedy reward on the 256 valid
    prompts, the SFT start among them. With 24 prompts × 2 passes per update, seeds 0-13: full − v2 =
    −0.2, −0.1, 0, +1.2 [−0.3, +2.6], −1.5, −1.0, −1.5, −3.2, 0, −1.5, −2.1, −1.0, −1.9, −3.0 points, below
    beyond noise on seeds 6, 7, 10, 12 and 13 (0: the start kept, seeds 2 and 8); with 12 × 4 it had been
    −4.0 to +0.5, below beyond noise on seed 2 alone (RESULTS.md, 2026-12-07 seventh and eighth entries).
    PPO's own sampled reward, paired on the 256 valid prompts (the test below), rises on 10 of the 14 (13
    with 4 answers per prompt): not asserted.

    What this catches: a missing or malformed paired row, a row that disagrees with the table, PPO
    that does not move the policy (exact KL to SFT at the last update 0.017-0.039 on the 14 seeds), and
    a kept checkpoint more than 3 points worse than SFT (≥ 1.8 points of room on every seed, for a machine
    whose floats take PPO elsewhere). What it cannot catch: PPO that moves but never helps, since the start
    is then kept and full = v2 (tests/unit/test_ppo.py's toy asserts that the same PPO raises a reward
    on each of its seeds)."""
    def illegal(model):
        i0 = summary(run_root, model, "I0")
        return i0["repeat_item_pct"] + i0["non_exist_pct"] + i0["in_history_pct"]

    e = pd.read_csv(run_root / "06_eval" / "start_effects.csv")
    e = e[(e["model"] == "full") & (e["start"] == "v2") & (e["figure"] == "illegal_item_pct") & (e["matcher"] == "fuzzy")]
    assert len(e) == 1, e
    e = e.iloc[0]
    assert e["delta"] == pytest.approx(illegal("full") - illegal("v2"))
    assert e["delta_lo"] <= e["delta"] + 1e-9 and e["delta"] <= e["delta_hi"] + 1e-9, e.to_dict()
    assert e["delta"] <= 3, e.to_dict()  # seeds 0-13: −3.2 to +1.2 (seed 3)
    log = pd.read_csv(run_root / "05_ppo" / "ppo_log.csv")
    assert log.loc[log["update"] > 0, "full_kl"].iloc[-1] > 0.005, log["full_kl"].tolist()  # 0.017-0.039


def test_rl_reward_check_pairs_the_last_actor_with_its_start(run_root):
    """Stage 05's reward check (`reward_check: 1`): the SFT start and the last actor each answer the 256 valid
    prompts once, sampled from one seed, and `metrics.json` holds the paired gain with its interval. The
    file and the summary must agree. The gain itself is not asserted: on seeds 0-13 it is −0.069 to +0.192
    (list reward), above 0 on 10, beyond noise on 5 (RESULTS.md, 2026-12-07 eighth entry)."""
    check = pd.read_csv(run_root / "05_ppo" / "reward_check.csv")
    gain = metrics(run_root, "05_ppo")["reward_gain"]
    assert len(check) == 256 and check["prompt"].nunique() == 256 and gain["prompts"] == 256
    assert {"I0", "I1+C", "I1-C"} <= set(check["task"])
    assert gain["delta"] == pytest.approx((check["last_reward"] - check["start_reward"]).mean())
    assert gain["lo"] <= gain["delta"] <= gain["hi"] and gain["hi"] - gain["lo"] > 0, gain
    assert gain["start_illegal_pct"] == pytest.approx(100 * check["start_illegal"].sum() / check["start_items"].sum())
    assert (check["start_items"] > 0).mean() > 0.9  # the SFT start answers with lists


# ------------------------------------------------------------------ the playground in a real browser (issue 21)

def _wait_for(evaluate, probe: str, seconds: int = 300):
    """Evaluate a JS arrow function in the page every half second until it returns something truthy;
    fail after `seconds`. Values come back as JSON: probes return text or booleans, not DOM nodes. A
    probe that meets a page still loading (its context replaced) is asked again."""
    end = time.monotonic() + seconds
    last = None
    while time.monotonic() < end:
        try:
            value = evaluate(f"({probe})()", timeout=30)
        except RuntimeError as err:  # the page navigated under the probe
            last = err
        else:
            if value:
                return value
        time.sleep(0.5)
    raise AssertionError(f"the page never satisfied {probe} within {seconds} s (last error: {last})")


@pytest.mark.skipif(lab_browser.CHROMIUM is None, reason="no chromium (Debian: apt install chromium)")
def test_the_playground_works_in_jupyterlab_in_a_real_browser(run_root, tmp_path):
    """Notebook 08 opened in JupyterLab in headless chromium: its kernel starts without marking it
    modified; run all cells, the widgets render, the
    example's table appears; then a choice made in the page's own dropdown and a click on the page's
    button redraw the table for the new intention."""
    nb = json.loads((paths.REPO_ROOT / "notebooks" / "08_playground.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = [f"run = {run_root.name!r}\n", f"outputs_dir = {str(run_root.parent)!r}"]
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "08_playground.ipynb").write_text(json.dumps(nb))
    with lab_browser.lab_page(tmp_path / "lab") as evaluate:
        _wait_for(evaluate, "() => !!window.jupyterapp")  # JupyterLab exposes its app once it has started
        # the kernel's info reply (language_info) arrives once its session is ready: opening a notebook
        # and starting its kernel must not mark it modified (recnb.lab)
        dirty = evaluate("(async () => { const app = window.jupyterapp; await app.restored; "
                         "const w = await app.commands.execute('docmanager:open', {path: '08_playground.ipynb', factory: 'Notebook'}); "
                         "await w.context.ready; await w.sessionContext.ready; await w.sessionContext.session.kernel.info; "
                         "await new Promise(r => setTimeout(r, 1000)); const dirty = w.context.model.dirty; "
                         "await app.commands.execute('notebook:run-all-cells'); return dirty; })()")
        assert dirty is False
        # textContent, not innerText: a widget's text counts whether or not the page has laid it out;
        # ipywidgets writes option labels with non-breaking spaces, hence \s in the patterns
        first = _wait_for(evaluate, "() => { const t = [...document.querySelectorAll('.jp-OutputArea-output table')]"
                                    ".map(e => e.textContent).join(' '); const b = [...document.querySelectorAll("
                                    "'button.widget-button')].find(e => e.textContent.includes('Recommend')); "
                                    "return t.includes('SASRec') && b ? t : null; }")
        assert "v2" in first and "full" in first  # every model of the run answered the example
        category = _wait_for(evaluate, "() => { const s = [...document.querySelectorAll('.widget-dropdown select')]"
                                       ".find(e => [...e.options].some(o => /^no\\s+C/.test(o.text))); if (!s) return null; "
                                       "s.value = [...s.options].find(o => /^no\\s+C/.test(o.text)).value; "
                                       "s.dispatchEvent(new Event('change', {bubbles: true})); "
                                       "const c = [...document.querySelectorAll('.widget-dropdown')].find("
                                       "e => e.textContent.startsWith('category')); "
                                       "return c.querySelector('select').selectedOptions[0].text; }")
        evaluate("(() => { [...document.querySelectorAll('button.widget-button')].find("
                 "e => e.textContent.includes('Recommend')).click(); return true; })()")
        redrawn = _wait_for(evaluate, "() => { const t = document.body.textContent; "
                                      f"return t.includes('no {category}, k = 10') ? t : null; }}")
        assert "Popularity" in redrawn
