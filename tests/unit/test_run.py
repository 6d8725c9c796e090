"""The papermill runner: merge of common + stage blocks, validation before running, up-to-date skips,
refusal to overwrite stale stages, errors."""

import json

import pytest

from recnb import paths, record, run
from recnb.run import ParamsError


def write(tmp_path, text):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    return f


def test_merge_common_into_blocks_that_have_the_parameter(tmp_path):
    f = write(tmp_path, "run: r1\ncommon: {dataset: tiny, seed: 3}\n01_data_duckdb: {user_core: 7}\n")
    name, jobs = run.load_jobs(f, outputs_dir=str(tmp_path / "out"))
    assert name == "r1" and [j.name for j in jobs] == ["01_data_duckdb"]
    assert jobs[0].params == {"dataset": "tiny", "seed": 3, "user_core": 7, "run": "r1", "outputs_dir": str(tmp_path / "out")}


def test_block_overrides_common(tmp_path):
    f = write(tmp_path, "run: r\ncommon: {seed: 1}\n01_data_duckdb: {seed: 9}\n")
    assert run.load_jobs(f)[1][0].params["seed"] == 9


@pytest.mark.parametrize(
    "text, message",
    [
        ("run: r\n01_data_duckdb: {user_cores: 5}\n", "01_data_duckdb.user_cores is not a parameter of notebooks/01_data_duckdb.ipynb"),
        ("run: r\n09_magic: {}\n", "unknown stage block '09_magic'"),
        ("common: {}\n", "needs a top-level 'run: <name>'"),
        ("run: r\ncommon: {colour: red}\n01_data_duckdb: {}\n", "common key(s) colour are parameters of no notebook"),
        ("run: r\n01_data_duckdb: [1, 2]\n", "block '01_data_duckdb' must be a mapping"),
        ("run: r\n01_data_duckdb:v2: {}\n", "notebooks/01_data_duckdb.ipynb takes no variants"),
        ("run: r\n01_data_duckdb: {run: other}\n", "01_data_duckdb.run is not a parameter"),
        ("run: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_params_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(ParamsError) as err:
        run.load_jobs(write(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_params_file(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        run.load_jobs(tmp_path / "nope.yaml")


def test_select_only_and_from():
    jobs = [run.Job("01_data_duckdb", ""), run.Job("02_sasrec", ""), run.Job("04_sft_unsloth", "v1"), run.Job("04_sft_unsloth", "")]
    assert [j.name for j in run.select_jobs(jobs, only="02")] == ["02_sasrec"]
    assert [j.name for j in run.select_jobs(jobs, only="04_sft_unsloth:v1")] == ["04_sft_unsloth-v1"]
    assert [j.name for j in run.select_jobs(jobs, start="02_sasrec")] == ["02_sasrec", "04_sft_unsloth-v1", "04_sft_unsloth"]
    with pytest.raises(ParamsError, match="stage '05_ppo' is not in this params file"):
        run.select_jobs(jobs, only="05_ppo")


def test_paper_blocks_only_with_flag(tmp_path):
    f = write(tmp_path, "run: r\n01_data_duckdb: {}\npaper:\n  01_data_duckdb: {user_core: 2}\n")
    assert run.load_jobs(f)[1][0].params.get("user_core") is None
    assert run.load_jobs(f, paper=True)[1][0].params["user_core"] == 2


def test_runs_stage_then_skips_it_and_refuses_to_overwrite_when_stale(tmp_path, capsys):
    f = write(tmp_path, "run: r\ncommon: {dataset: tiny, threads: 1}\n01_data_duckdb: {}\n")
    out = str(tmp_path / "outputs")
    assert run.main([str(f), "--outputs-dir", out]) == 0
    stage = paths.stage_dir(out, "r", "01_data_duckdb", create=False)
    assert (stage / "metrics.json").exists() and (tmp_path / "outputs/r/notebooks/01_data_duckdb.ipynb").exists()
    before = (stage / "items.parquet").stat().st_mtime_ns
    capsys.readouterr()
    assert run.main([str(f), "--outputs-dir", out]) == 0  # same params: up to date
    assert "01_data_duckdb: up to date, skipped" in capsys.readouterr().out
    assert (stage / "items.parquet").stat().st_mtime_ns == before
    f = write(tmp_path, "run: r\ncommon: {dataset: tiny, threads: 1}\n01_data_duckdb: {user_core: 3}\n")
    assert run.main([str(f), "--outputs-dir", out]) == 2
    assert "01_data_duckdb (params changed) already exist(s); pass --force" in capsys.readouterr().err
    assert (stage / "items.parquet").stat().st_mtime_ns == before  # nothing touched
    assert run.main([str(f), "--outputs-dir", out, "--force"]) == 0
    assert (stage / "items.parquet").stat().st_mtime_ns != before
    assert json.loads((stage / "params.json").read_text())["user_core"] == 3


def _done(root, name, params, reads=(), files=None):
    """A finished stage dir as record_results leaves it, having read the stage dirs `reads`."""
    (root / name).mkdir(parents=True, exist_ok=True)
    for file, text in (files or {"out.txt": name}).items():
        (root / name / file).write_text(text)
    record.record_results(root / name, params, {}, inputs={r: root / r for r in reads})


def test_plan_reruns_what_a_rerun_stage_feeds_and_nothing_else(tmp_path):
    jobs = [run.Job("04_sft_unsloth", "", {"a": 1}), run.Job("04_sft_unsloth", "v1", {"a": 1}),
            run.Job("05_ppo", "", {"b": [1, 2]}), run.Job("06_eval", "", {"models": {"x": "y"}}),
            run.Job("07_case_study", "", {})]
    _done(tmp_path, "04_sft_unsloth", {"a": 1, "seed": 0})
    _done(tmp_path, "05_ppo", {"b": [1, 2]})
    _done(tmp_path, "06_eval", {"models": {"x": "y"}})
    _done(tmp_path, "07_case_study", {})
    # the new variant feeds only the evaluation stages: 04 and 05 stay, 06 and 07 are stale
    with pytest.raises(run.ParamsError, match=r"06_eval \(04_sft_unsloth-v1 reruns\), 07_case_study"):
        run.plan(jobs, tmp_path)
    todo, fresh = run.plan(jobs, tmp_path, force=True)
    assert [j.name for j in todo] == ["04_sft_unsloth-v1", "06_eval", "07_case_study"]
    assert [j.name for j in fresh] == ["04_sft_unsloth", "05_ppo"]
    # a main-path stage with other params reruns, and so does everything after it
    (tmp_path / "04_sft_unsloth" / "params.json").write_text(json.dumps({"a": 2}))
    assert len(run.plan(jobs, tmp_path, force=True)[0]) == 5
    (tmp_path / "04_sft_unsloth" / "params.json").write_text(json.dumps({"a": 1}))
    (tmp_path / "05_ppo" / "metrics.json").unlink()  # a failed or interrupted stage is incomplete
    with pytest.raises(run.ParamsError, match=r"05_ppo \(incomplete\)"):
        run.plan(jobs[:3], tmp_path)
    assert [j.name for j in run.plan(jobs, tmp_path, rerun=True)[0]] == [j.name for j in jobs]


def test_failed_stage_names_stage_and_cell_and_leaves_it_incomplete(tmp_path, capsys):
    f = write(tmp_path, "run: r\ncommon: {dataset: nosuch, threads: 1}\n01_data_duckdb: {}\n")
    out = str(tmp_path / "outputs")
    assert run.main([str(f), "--outputs-dir", out]) == 2
    err = capsys.readouterr().err
    assert "stage 01_data_duckdb failed in cell" in err and "unknown dataset 'nosuch'" in err
    assert not (tmp_path / "outputs/r/01_data_duckdb/metrics.json").exists()


def test_eval_variant_is_a_side_table_and_variant_is_not_compared_as_a_param(tmp_path):
    jobs = [run.Job("05_ppo", "long", {"b": 1, "variant": "long"}), run.Job("06_eval", "", {"m": 1, "variant": ""}),
            run.Job("06_eval", "long", {"m": 2, "variant": "long"}), run.Job("07_case_study", "", {"variant": ""})]
    _done(tmp_path, "06_eval", {"m": 1})  # written before 06 took variants: no "variant" key
    _done(tmp_path, "07_case_study", {})
    todo, fresh = run.plan(jobs[1:], tmp_path)
    # the old 06_eval/ is up to date; the side table 06_eval-long runs and feeds nothing (07 reads 06_eval/)
    assert [j.name for j in todo] == ["06_eval-long"]
    assert [j.name for j in fresh] == ["06_eval", "07_case_study"]
    # a PPO variant feeds both evaluations, so both tables rerun (and 07 after the main one)
    assert [j.name for j in run.plan(jobs, tmp_path, force=True)[0]] == [j.name for j in jobs]


def test_a_stage_whose_input_reran_or_whose_files_changed_is_stale(tmp_path):
    """Up to date = same params, same own files, same content of every stage it read."""
    jobs = [run.Job("01_data_duckdb", "", {"a": 1}), run.Job("02_sasrec", "", {"b": 1}),
            run.Job("03_instructions", "", {"c": 1})]
    _done(tmp_path, "01_data_duckdb", {"a": 1})
    _done(tmp_path, "02_sasrec", {"b": 1}, reads=["01_data_duckdb"], files={"teacher_topk.parquet": "top"})
    _done(tmp_path, "03_instructions", {"c": 1}, reads=["01_data_duckdb", "02_sasrec"])
    assert run.plan(jobs, tmp_path) == ([], jobs)
    # 02 reran with another param (--only 02_sasrec --force): its teacher changed under 03
    _done(tmp_path, "02_sasrec", {"b": 2}, reads=["01_data_duckdb"], files={"teacher_topk.parquet": "other"})
    jobs[1].params = {"b": 2}
    with pytest.raises(ParamsError, match=r"03_instructions \(input 02_sasrec changed since it ran\)"):
        run.plan(jobs, tmp_path)
    assert [j.name for j in run.plan(jobs, tmp_path, force=True)[0]] == ["03_instructions"]


def test_a_deleted_artifact_makes_its_stage_stale_and_blocks_what_reads_it(tmp_path):
    jobs = [run.Job("02_sasrec", "", {"b": 1}), run.Job("03_instructions", "", {"c": 1})]
    _done(tmp_path, "02_sasrec", {"b": 1}, files={"teacher_topk.parquet": "top", "sasrec.pt": "w"})
    _done(tmp_path, "03_instructions", {"c": 1}, reads=["02_sasrec"])
    (tmp_path / "02_sasrec" / "teacher_topk.parquet").unlink()
    assert run.stage_state(tmp_path / "02_sasrec", {"b": 1}) == ("changed", "teacher_topk.parquet missing since it ran")
    with pytest.raises(ParamsError, match=r"02_sasrec \(teacher_topk.parquet missing since it ran\)"):
        run.plan(jobs[:1], tmp_path)  # --only 02: stale, not skipped
    with pytest.raises(ParamsError, match=r"03_instructions reads 02_sasrec, which is not up to date "
                                          r"\(teacher_topk.parquet missing since it ran\); rerun it first"):
        run.plan(jobs[1:], tmp_path, rerun=True, context=jobs)  # --only 03 --rerun
    (tmp_path / "02_sasrec" / "sasrec.pt").write_text("tampered")
    (tmp_path / "02_sasrec" / "teacher_topk.parquet").write_text("top")
    assert run.stage_state(tmp_path / "02_sasrec", {"b": 1})[1] == "sasrec.pt modified since it ran"
