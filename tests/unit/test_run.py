"""The papermill runner: merge of common + stage blocks, validation before running, refusal, errors."""

import pytest

from recnb import paths, run
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


def test_runs_stage_then_refuses_to_overwrite(tmp_path, capsys):
    f = write(tmp_path, "run: r\ncommon: {dataset: tiny, threads: 1}\n01_data_duckdb: {}\n")
    out = str(tmp_path / "outputs")
    assert run.main([str(f), "--outputs-dir", out]) == 0
    stage = paths.stage_dir(out, "r", "01_data_duckdb", create=False)
    assert (stage / "metrics.json").exists() and (tmp_path / "outputs/r/notebooks/01_data_duckdb.ipynb").exists()
    before = (stage / "items.parquet").stat().st_mtime_ns
    assert run.main([str(f), "--outputs-dir", out]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (stage / "items.parquet").stat().st_mtime_ns == before  # nothing touched


def test_failed_stage_names_stage_and_cell_and_leaves_it_incomplete(tmp_path, capsys):
    f = write(tmp_path, "run: r\ncommon: {dataset: nosuch, threads: 1}\n01_data_duckdb: {}\n")
    out = str(tmp_path / "outputs")
    assert run.main([str(f), "--outputs-dir", out]) == 2
    err = capsys.readouterr().err
    assert "stage 01_data_duckdb failed in cell" in err and "unknown dataset 'nosuch'" in err
    assert not (tmp_path / "outputs/r/01_data_duckdb/metrics.json").exists()
