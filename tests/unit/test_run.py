"""The papermill runner: merge of common + stage blocks, validation before running, up-to-date skips,
refusal to overwrite stale stages, errors."""

import json
import os
import shutil
import tempfile

import pytest

from recnb import artifacts as col
from recnb import paths, record, run
from recnb.data import DataConfig
from recnb.run import ParamsError


def write(tmp_path, text):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    return f


def test_merge_common_into_blocks_that_have_the_parameter(tmp_path):
    f = write(tmp_path, "run: r1\ncommon: {dataset: tiny, seed: 3}\n01_data_duckdb: {user_core: 7}\n")
    name, jobs = run.load_jobs(f, outputs_dir=str(tmp_path / "out"))
    assert name == "r1" and [j.name for j in jobs] == ["01_data_duckdb"]
    # every parameter is resolved and injected: the defaults of the typed config fill what the file omits
    assert jobs[0].params == {**DataConfig.defaults(), "dataset": "tiny", "seed": 3, "user_core": 7, "run": "r1",
                              "outputs_dir": str(tmp_path / "out")}


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
    assert run.load_jobs(f)[1][0].params["user_core"] == DataConfig.defaults()["user_core"] != 2
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


def test_a_run_copied_to_another_outputs_dir_stays_up_to_date(tmp_path, capsys):
    f = write(tmp_path, "run: r\ncommon: {dataset: tiny, threads: 1}\n01_data_duckdb: {}\n")
    assert run.main([str(f), "--outputs-dir", str(tmp_path / "a")]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    capsys.readouterr()
    assert run.main([str(f), "--outputs-dir", str(tmp_path / "b")]) == 0
    assert "01_data_duckdb: up to date, skipped" in capsys.readouterr().out


def test_a_copied_stage_07_reruns_its_figures_live_beside_the_run(tmp_path):
    """07 writes `paper_figures/<run>/` outside its dir: copied without them, it is not up to date."""
    _done(tmp_path, "06_eval", {"outputs_dir": "a"})
    _done(tmp_path, "07_case_study", {"outputs_dir": "a"})
    assert run.stage_state(tmp_path / "06_eval", {"outputs_dir": "b"}) == ("done", "")
    assert run.stage_state(tmp_path / "07_case_study", {"outputs_dir": "b"}) == ("changed", "params changed")
    assert run.stage_state(tmp_path / "07_case_study", {"outputs_dir": "a"}) == ("done", "")


def test_a_parameter_added_after_a_stage_ran_changes_nothing_at_its_default(tmp_path):
    """params.json of a stage run before `i1_minus_share` existed lacks it: at its default (the stage's
    earlier behaviour) the stage is up to date; set to anything else, or an unknown key, it is not."""
    old = {"seed": 0, "valid_per_type": 16}
    _done(tmp_path, "03_instructions", old)
    assert run.stage_state(tmp_path / "03_instructions", {**old, "i1_minus_share": 0.5}) == ("done", "")
    assert run.stage_state(tmp_path / "03_instructions", {**old, "i1_minus_share": 0.6667}) == ("changed",
                                                                                              "params changed")
    assert run.stage_state(tmp_path / "03_instructions", {**old, "no_such_param": 0.5})[0] == "changed"
    assert run.stage_state(tmp_path / "03_instructions", {**old, "valid_per_type": 32})[0] == "changed"


def _done(root, name, params, reads=(), files=None):
    """A finished stage dir as record_results leaves it, having read the stage dirs `reads`; `files`
    (default: one per pattern of the stage's `col.REQUIRED_OUTPUTS`) on top of the required ones."""
    (root / name).mkdir(parents=True, exist_ok=True)
    stage = name.split("-")[0]
    required = {pattern.replace("*", "model"): name for pattern in col.REQUIRED_OUTPUTS.get(stage, ())}
    for file, text in {**required, **(files or {"out.txt": name})}.items():
        (root / name / file).parent.mkdir(parents=True, exist_ok=True)
        (root / name / file).write_text(text)
    record.record_results(root / name, params, {}, inputs={r: root / r for r in reads})


MODELS = {"v1": "04_sft_unsloth-v1", "v2": "04_sft_unsloth", "full": "05_ppo", "SASRec": "sasrec"}


def test_plan_reruns_what_a_rerun_stage_feeds_and_nothing_else(tmp_path):
    jobs = [run.Job("04_sft_unsloth", "", {"a": 1}), run.Job("04_sft_unsloth", "v1", {"a": 1}),
            run.Job("05_ppo", "", {"b": [1, 2]}), run.Job("06_eval", "", {"models": MODELS}),
            run.Job("07_case_study", "", {})]
    _done(tmp_path, "04_sft_unsloth", {"a": 1, "seed": 0})
    _done(tmp_path, "05_ppo", {"b": [1, 2]})
    _done(tmp_path, "06_eval", {"models": MODELS})
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


def test_eval_reads_only_the_model_dirs_its_models_name(tmp_path):
    """A table of v2 alone neither waits for a stale PPO stage nor reruns when PPO or v1 reruns; a table
    that names PPO also reads the SFT model under it."""
    v2_only = {"v2": "04_sft_unsloth", "SASRec": "sasrec"}
    jobs = [run.Job("03_instructions", "", {"c": 1}), run.Job("04_sft_unsloth", "", {"a": 1}),
            run.Job("04_sft_unsloth", "v1", {"a": 1}), run.Job("05_ppo", "", {"b": 1}),
            run.Job("06_eval", "", {"models": v2_only})]
    _done(tmp_path, "03_instructions", {"c": 1})
    _done(tmp_path, "04_sft_unsloth", {"a": 1}, reads=["03_instructions"])
    _done(tmp_path, "04_sft_unsloth-v1", {"a": 1}, reads=["03_instructions"])
    _done(tmp_path, "05_ppo", {"b": 2}, reads=["04_sft_unsloth"])  # stale: other params
    _done(tmp_path, "06_eval", {"models": v2_only}, reads=["03_instructions", "04_sft_unsloth"])
    assert [j.name for j in run.plan(jobs, tmp_path, force=True)[0]] == ["05_ppo"]
    assert [j.name for j in run.plan(jobs[:3] + jobs[4:], tmp_path, force=True)[0]] == []
    jobs[2].params = {"a": 2}  # v1 reruns: the v2 table does not
    assert [j.name for j in run.plan(jobs, tmp_path, force=True)[0]] == ["04_sft_unsloth-v1", "05_ppo"]
    jobs[2].params = {"a": 1}
    assert run.plan([jobs[4]], tmp_path, rerun=True, context=jobs) == ([jobs[4]], [])  # --only 06: 05 is no input
    # naming full makes the stale PPO stage an input again: refused, then rerun before the table
    jobs[4].params = {"models": {**v2_only, "full": "05_ppo"}}
    with pytest.raises(ParamsError, match=r"06_eval reads 05_ppo, which is not up to date"):
        run.plan([jobs[4]], tmp_path, force=True, context=jobs)
    assert [j.name for j in run.plan(jobs, tmp_path, force=True)[0]] == ["05_ppo", "06_eval"]
    # a named PPO dir brings the SFT dirs under it: with 05 up to date, a stale 04 still blocks the table
    _done(tmp_path, "05_ppo", {"b": 1}, reads=["04_sft_unsloth"])
    jobs[1].params = {"a": 2}
    with pytest.raises(ParamsError, match=r"06_eval reads 04_sft_unsloth, which is not up to date \(params"):
        run.plan([jobs[4]], tmp_path, rerun=True, context=jobs)
    jobs[1].params = {"a": 1}
    # stages that are not model dirs still feed it whatever it names (03: the test prompts)
    jobs[0].params = {"c": 2}
    assert len(run.plan(jobs, tmp_path, force=True)[0]) == 5


def test_failed_stage_names_stage_and_cell_and_leaves_it_incomplete(tmp_path, capsys):
    (tmp_path / "raw").mkdir()  # exists, so the params pass; the steam files are not in it
    f = write(tmp_path, f"run: r\ncommon: {{dataset: steam, threads: 1}}\n01_data_duckdb: {{raw_path: {tmp_path / 'raw'}}}\n")
    out = str(tmp_path / "outputs")
    assert run.main([str(f), "--outputs-dir", out]) == 2
    err = capsys.readouterr().err
    assert "stage 01_data_duckdb failed in cell" in err and "steam_reviews.json.gz" in err
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


TINY = "run: r\ncommon: {dataset: tiny, threads: 1}\n01_data_duckdb: {}\n02_sasrec: {}\n03_instructions: {}\n"
FULL = TINY + "04_sft_unsloth: {}\n05_ppo: {}\n06_eval: {}\n07_case_study: {}\n"


@pytest.mark.parametrize("text, message", [
    (TINY.replace("01_data_duckdb: {}", "01_data_duckdb: {user_core: five}"),
     "01_data_duckdb.user_core = 'five' must be an integer, got str"),
    (TINY.replace("dataset: tiny,", "dataset: tiny, seed: '0',"), "01_data_duckdb.seed = '0' must be an integer, got str"),
    (TINY.replace("02_sasrec: {}", "02_sasrec: {hidden: '64'}"), "02_sasrec.hidden = '64' must be an integer, got str"),
    (TINY.replace("02_sasrec: {}", "02_sasrec: {epochs: 0}"), "02_sasrec.epochs = 0 must be >= 1"),
    (TINY.replace("02_sasrec: {}", "02_sasrec: {batch_size: -4}"), "02_sasrec.batch_size = -4 must be >= 1"),
    (TINY.replace("02_sasrec: {}", "02_sasrec: {hidden: 30, heads: 4}"), "hidden = 30 must be a multiple of heads = 4"),
    (TINY.replace("02_sasrec: {}", "02_sasrec: {dropout: true}"), "02_sasrec.dropout = True must be a number, got bool"),
    (FULL.replace("05_ppo: {}", "05_ppo: {updates: -1}"), "05_ppo.updates = -1 must be >= 1"),
    (FULL.replace("05_ppo: {}", "05_ppo: {batch_size: 0}"), "05_ppo.batch_size = 0 must be >= 1"),
    (FULL.replace("05_ppo: {}", "05_ppo: {batch_size: 6}"), "05_ppo.batch_size = 6 must be a multiple of minibatch_size = 4"),
    (FULL.replace("05_ppo: {}", "05_ppo: {reward: lists}"), "05_ppo.reward = 'lists' must be one of 'full', 'list'"),
    (FULL.replace("05_ppo: {}", "05_ppo: {tasks: [I5]}"), "05_ppo.tasks = ['I5']: use \"all\" or a list of tasks"),
    (FULL.replace("04_sft_unsloth: {}", "04_sft_unsloth: {max_steps: 0}"), "04_sft_unsloth.max_steps = 0 trains nothing"),
    (FULL.replace("04_sft_unsloth: {}", "04_sft_unsloth: {batch_size: 0}"), "04_sft_unsloth.batch_size = 0 must be >= 1"),
    (FULL.replace("04_sft_unsloth: {}", "04_sft_unsloth: {label_source: teachers}"),
     "04_sft_unsloth.label_source = 'teachers' must be one of 'teacher', 'history'"),
    (FULL.replace("04_sft_unsloth: {}", "04_sft_unsloth: {base_model: smollm2-135M}"),
     "04_sft_unsloth.base_model = 'smollm2-135M' is neither a built-in model (smollm2-135m, tiny-random, tiny-llama)"),
    (FULL.replace("06_eval: {}", "06_eval: {models: {v2: 04_sft_unsloth, full: 05_ppo_typo}, constrained_models: []}"),
     "06_eval.models names '05_ppo_typo', which this file does not produce"),
    (FULL.replace("06_eval: {}", "06_eval: {constrained_models: [v3]}"),
     "06_eval.constrained_models = ['v3']: 'v3' is not a label of models"),
    (FULL.replace("05_ppo: {}", "05_ppo: {sft_dir: 04_sft_unsloth-long}"),
     "05_ppo.sft_dir names '04_sft_unsloth-long', which this file does not produce"),
    (FULL.replace("07_case_study: {}", "07_case_study: {matcher: fuzzzy}"), "07_case_study.matcher = 'fuzzzy' must be one of"),
    (TINY + "02_sasrec: {epochs: 3}\n", "'02_sasrec' appears twice (line 6, column 1); keep one"),
    ("run: r\n01_data_duckdb: {user_core: [1, 2}\n", "not valid YAML: while parsing a flow sequence in \"<unicode string>\", line 2"),
])
def test_bad_values_stop_the_run_before_anything_is_written(tmp_path, capsys, text, message):
    """Types, ranges, enums, references and YAML: one line naming file, block, key, value and what is
    allowed; exit code 2; no stage directory touched."""
    f = write(tmp_path, text)
    out = tmp_path / "outputs"
    assert run.main([str(f), "--outputs-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith(f"error: {f}") and "\n" not in err, err
    assert not out.exists()


def test_a_reference_to_a_finished_dir_of_the_run_is_fine(tmp_path):
    """06 may evaluate a model another params file trained, when its stage dir exists finished."""
    text = FULL.replace("06_eval: {}", "06_eval: {models: {v2: 04_sft_unsloth-long}, constrained_models: []}")
    with pytest.raises(ParamsError, match="04_sft_unsloth-long"):
        run.load_jobs(write(tmp_path, text), outputs_dir=str(tmp_path / "o"))
    _done(tmp_path / "o" / "r", "04_sft_unsloth-long", {})
    assert run.load_jobs(write(tmp_path, text), outputs_dir=str(tmp_path / "o"))[0] == "r"


SET = ("run: r\ncommon: {dataset: tiny, threads: 1}\n"
       "04_sft_unsloth: &sft {epochs: 2.0}\n04_sft_unsloth:v1: {<<: *sft, tasks: [I0]}\n05_ppo: {}\n06_eval: {}\n"
       "paper:\n  05_ppo:v3: {reward: list}\n  06_eval: {max_test_users: 5}\n")


def _params_of(jobs):
    return {j.name: j.params for j in jobs}


def test_set_changes_one_parameter_of_the_named_block_and_reads_the_value_as_yaml(tmp_path):
    f = write(tmp_path, SET)
    base = _params_of(run.load_jobs(f, paper=True)[1])
    name, jobs = run.load_jobs(f, paper=True, overrides=["05_ppo.lam=0", "04_sft_unsloth.learning_rate=1e-4",
                                                         "05_ppo:v3.tasks=[I0, I2]", "common.seed=7", "run=r2"])
    got = _params_of(jobs)
    assert name == "r2" and all(p["run"] == "r2" and p["seed"] == 7 for p in got.values())
    assert got["05_ppo"]["lam"] == 0 and got["05_ppo-v3"]["lam"] == base["05_ppo-v3"]["lam"] == 0.95
    assert got["04_sft_unsloth"]["learning_rate"] == 1e-4  # a float, though PyYAML reads "1e-4" as a string
    assert got["04_sft_unsloth-v1"]["learning_rate"] == base["04_sft_unsloth-v1"]["learning_rate"]  # the anchor's copy
    assert got["04_sft_unsloth-v1"]["epochs"] == 2.0 and got["05_ppo-v3"]["tasks"] == ["I0", "I2"]
    unchanged = ("lam", "learning_rate", "tasks", "seed", "run")
    for job, params in got.items():
        assert {k: v for k, v in params.items() if k not in unchanged} == \
            {k: v for k, v in base[job].items() if k not in unchanged}, job
    # a block both at the top and under paper: (06_eval) changes in both, so --paper keeps the value
    assert _params_of(run.load_jobs(f, paper=True, overrides=["06_eval.max_test_users=9"])[1])["06_eval"][
        "max_test_users"] == 9
    assert f.read_text() == SET  # the file is never written
    assert run.load_jobs(f, overrides=["run=2026-12-07"])[0] == "2026-12-07"  # a name, not a YAML date
    with pytest.raises(ParamsError, match=r"--set '05_ppo:v3.lam=0': '05_ppo:v3' is a block under 'paper:' of "
                                          r".*, which runs only with --paper; add --paper"):
        run.load_jobs(f, overrides=["05_ppo:v3.lam=0"])
    assert _params_of(run.load_jobs(f, overrides=["06_eval.max_test_users=9"])[1])["06_eval"]["max_test_users"] == 9


@pytest.mark.parametrize("item, message", [
    ("05_ppo.lam", "--set '05_ppo.lam': write BLOCK.KEY=VALUE (e.g. 05_ppo.lr=1e-4) or run=NAME"),
    ("lam=0", "--set 'lam=0': write BLOCK.KEY=VALUE"),
    ("05_ppo.lam=", "--set '05_ppo.lam=': write BLOCK.KEY=VALUE"),
    ("05_ppo.lamm=0", "--set '05_ppo.lamm=0': 'lamm' is not a parameter of notebooks/05_ppo.ipynb (its parameters: "),
    ("05_ppo.run=x", "'run' is not a parameter of notebooks/05_ppo.ipynb"),
    ("02_sasrec.epochs=3", ("has no block '02_sasrec' (its blocks: common, 04_sft_unsloth, 04_sft_unsloth:v1, "
                            "05_ppo, 06_eval, paper: 05_ppo:v3, paper: 06_eval)")),
    ("05_ppo.lam=[1", "--set '05_ppo.lam=[1': the value is not valid YAML: "),
    ("05_ppo.lam=2", "with --set 05_ppo.lam=2: 05_ppo.lam = 2 must be <= 1"),
    ("05_ppo.updates=ten", "with --set 05_ppo.updates=ten: 05_ppo.updates = 'ten' must be an integer, got str"),
    ("common.sed=1", "common key(s) sed are parameters of no notebook"),
    ("common.run=x", "--set 'common.run=x': 'run' is set by the runner, not by common; use --set run=NAME"),
])
def test_a_bad_set_stops_before_anything_runs_naming_the_override(tmp_path, capsys, item, message):
    f = write(tmp_path, SET)
    with pytest.raises(ParamsError) as err:
        run.load_jobs(f, paper=True, overrides=[item])
    assert message in str(err.value)
    assert run.main([str(f), "--outputs-dir", str(tmp_path / "o"), "--set", item]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {err.value}"
    assert not (tmp_path / "o").exists()


def test_a_dead_kernel_is_one_line_naming_the_stage_and_the_likely_cause(tmp_path, capsys, monkeypatch):
    import papermill
    from nbclient.exceptions import DeadKernelError

    def die(*args, **kwargs):
        raise DeadKernelError("Kernel died")

    monkeypatch.setattr(papermill, "execute_notebook", die)
    f = write(tmp_path, "run: r\ncommon: {dataset: tiny, threads: 1}\n01_data_duckdb: {}\n")
    assert run.main([str(f), "--outputs-dir", str(tmp_path / "outputs")]) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("error: stage 01_data_duckdb: its kernel died (most likely out of memory, or killed)")
    assert "Traceback" not in err


def test_the_run_ends_with_its_headline_figures_and_where_to_look(tmp_path):
    import pandas as pd

    root = tmp_path / "outputs" / "r"
    _done(root, "02_sasrec", {})
    record.write_json(root / "02_sasrec" / "metrics.json", {"test": {"hr@10": 0.5, "ndcg@10": 0.25}})
    _done(root, "06_eval", {})
    rows = [{"model": "v2", "matcher": "fuzzy", "test_group": g, "hr": 0.1, "tcp_pct": t, "cpa_pct": 50.0,
             "repeat_item_pct": 10.0, "non_exist_pct": 5.0, "in_history_pct": 1.0}
            for g, t in (("I0", None), ("I1+C", 90.0), ("I1+C_nocontrol", 60.0), ("I1-C", 20.0),
                         ("I1-C_nocontrol", 40.0), ("I2<=20", 0), ("I2~=30", 0), ("I2>=30", 0))]
    rows.append({**rows[1], "matcher": "exact", "tcp_pct": 1.0})  # the headline is the fuzzy matcher's
    pd.DataFrame(rows).to_csv(root / "06_eval" / "summary.csv", index=False)
    lines = run.run_summary(root, str(tmp_path / "outputs"))
    text = "\n".join(lines)
    assert "HR@10 0.500, NDCG@10 0.250" in text
    v2 = next(line for line in lines if line.strip().startswith("v2"))
    assert v2.split() == ["v2", "0.100", "90", "(60)", "–", "20", "(40)", "–", "50/50/50", "16.0"]
    summary = pd.read_csv(root / "06_eval" / "summary.csv")
    summary["tcp_pct_lo"], summary["tcp_pct_hi"] = summary["tcp_pct"] - 4, summary["tcp_pct"] + 6
    summary.to_csv(root / "06_eval" / "summary.csv", index=False)
    pd.DataFrame([{"model": "v2", "test_group": "I1+C", "delta": 30.0, "delta_lo": 21.0, "delta_hi": 38.4}]).to_csv(
        root / "06_eval" / "control_effects.csv", index=False)
    record.write_json(root / "02_sasrec" / "metrics.json", {"test": {}, "stage_seconds": 30.0})
    record.write_json(root / "06_eval" / "metrics.json", {"stage_seconds": 90.0})
    lines = run.run_summary(root, str(tmp_path / "outputs"))
    v2 = next(line for line in lines if line.strip().startswith("v2"))
    assert v2.split() == ["v2", "0.100", "90±5", "(60)", "+30", "[+21,+38]", "20±5", "(40)", "–", "50/50/50", "16.0"]
    assert "stage times: 02_sasrec 30s, 06_eval 90s; total 2.0 min" in "\n".join(lines)
    pd.DataFrame([{"figure": "illegal_item_pct", "delta": -1.64, "delta_lo": -3.2, "delta_hi": 0.06},
                  {"figure": "hr", "delta": 0.1, "delta_lo": 0.0, "delta_hi": 0.2}]).assign(
        model="full", start="v2", test_group="I0", matcher="fuzzy").to_csv(root / "06_eval" / "start_effects.csv",
                                                                           index=False)
    rl = [line.strip() for line in run.run_summary(root, str(tmp_path / "outputs")) if "its start" in line]
    assert rl == ["full over v2 (its start), illegal I0 items, same users, fuzzy: -1.6 [-3.2, +0.1] points"]
    _done(root, "04_sft_unsloth", {})
    record.write_json(root / "04_sft_unsloth" / "metrics.json", {"category_probe": {
        "base": {"category_auc": 0.5, "category_auc_se": 0.03}, "sft": {"category_auc": 0.712, "category_auc_se": 0.04}}})
    assert "0.5 = chance): base 0.50±0.03, sft 0.71±0.04" in "\n".join(run.run_summary(root, str(tmp_path / "outputs")))
    assert "RL's own reward" not in "\n".join(run.run_summary(root, str(tmp_path / "outputs")))
    _done(root, "05_ppo", {})
    record.write_json(root / "05_ppo" / "metrics.json", {"reward_gain": {"prompts": 256, "delta": 0.0234, "lo": -0.085,
                                                                         "hi": 0.129}})
    assert ("RL's own reward, sampled on 256 valid prompts, last actor − SFT start (paired 95 % interval): "
            "+0.023 [-0.085, +0.129]") in "\n".join(run.run_summary(root, str(tmp_path / "outputs")))
    assert "table2.md" in text and "figures" not in text  # no figures written: not announced
    assert run.run_summary(tmp_path / "outputs" / "empty", str(tmp_path / "outputs")) == [
        f"run empty: {tmp_path / 'outputs' / 'empty'}"]


def test_stage_seconds_join_metrics_json_and_a_missing_one_is_an_error(tmp_path):
    stage = tmp_path / "02_sasrec"
    stage.mkdir()
    with pytest.raises(run.StageFailed, match="without writing"):
        run.record_seconds(stage, 3.0)
    record.write_json(stage / "metrics.json", {"test": {"hr@10": 0.5}})
    run.record_seconds(stage, 12.345)
    assert record.read_json(stage / "metrics.json") == {"test": {"hr@10": 0.5}, "stage_seconds": 12.3}


def test_the_kernel_process_logs_to_a_file_not_to_the_terminal(tmp_path, capfd):
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('import os\nos.write(2, b"from the kernel process\\n")\nprint("in the notebook")')]
    nb.metadata["kernelspec"] = {"name": paths.KERNEL_NAME, "display_name": "recnb (.venv)", "language": "python"}
    src, out, log = tmp_path / "in.ipynb", tmp_path / "out.ipynb", tmp_path / "k.log"
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(out), kernel_name=paths.KERNEL_NAME, progress_bar=False,
                               kernel_manager_class=run.kernel_logged_to(log))
    assert "from the kernel process" in log.read_text()
    assert "in the notebook" in out.read_text()
    captured = capfd.readouterr()
    assert "from the kernel process" not in captured.err + captured.out


def _connection_notebook(path, marker: str) -> None:
    """A one-cell notebook that prints its marker and how its kernel is connected."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"from ipykernel import get_connection_info\ninfo = get_connection_info(unpack=True)\n"
        f"print({marker!r}, info['transport'], info['ip'])")]
    nb.metadata["kernelspec"] = {"name": paths.KERNEL_NAME, "display_name": "recnb (.venv)", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets")
def test_two_kernels_started_at_once_each_answer_on_their_own_sockets(tmp_path):
    """Two runs at once (`tiny_seeds --jobs 2`): over TCP a kernel could take the port jupyter_client had
    just picked for the other; each kernel now listens on Unix sockets under its own prefix."""
    from concurrent.futures import ThreadPoolExecutor

    import papermill

    sockets = {name: tempfile.TemporaryDirectory(prefix="recnb-t-") for name in "ab"}  # short: a socket path's limit

    def execute(name: str) -> str:
        src, out = tmp_path / f"{name}.ipynb", tmp_path / f"{name}.out.ipynb"
        _connection_notebook(src, f"marker-{name}")
        manager = run.kernel_logged_to(tmp_path / f"{name}.log", os.path.join(sockets[name].name, "k"))
        papermill.execute_notebook(str(src), str(out), kernel_name=paths.KERNEL_NAME, progress_bar=False,
                                   kernel_manager_class=manager)
        return out.read_text()

    with ThreadPoolExecutor(2) as pool:
        texts = dict(zip("ab", pool.map(execute, "ab")))
    for name, text in texts.items():
        assert f"marker-{name} ipc {os.path.join(sockets[name].name, 'k')}" in text
        assert not os.listdir(sockets[name].name)  # the sockets went with their kernel
        sockets[name].cleanup()


def test_the_runner_gives_its_kernels_unix_sockets_of_its_own(tmp_path, monkeypatch):
    import papermill

    seen = {}

    def record_manager(*args, kernel_manager_class, **kwargs):
        manager = kernel_manager_class(kernel_name=paths.KERNEL_NAME)
        seen.update(transport=manager.transport, ip=manager.ip)
        raise papermill.PapermillExecutionError(0, 1, "stop", "Stop", "here", [])

    monkeypatch.setattr(papermill, "execute_notebook", record_manager)
    f = write(tmp_path, "run: r\ncommon: {dataset: tiny, threads: 1}\n01_data_duckdb: {}\n")
    assert run.main([str(f), "--outputs-dir", str(tmp_path / "outputs")]) == 2
    if os.name == "posix":
        assert seen["transport"] == "ipc"
        assert os.path.isabs(seen["ip"]) and "recnb-kernels-" in seen["ip"]
        assert not os.path.exists(os.path.dirname(seen["ip"]))  # the directory went with the run
        long = tmp_path / ("t" * 90)  # a TMPDIR whose socket paths would pass the OS's limit: TCP, as before
        long.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(long))
        assert run.main([str(f), "--outputs-dir", str(tmp_path / "outputs")]) == 2
        assert seen["transport"] == "tcp" and not list(long.iterdir())
    else:
        assert seen["transport"] == "tcp"


def test_a_stage_that_finished_without_a_file_its_readers_need_is_incomplete(tmp_path):
    """metrics.json written but no adapter/ (stage 05 once did so when no actor qualified as best):
    stale, rerun with --force, never skipped as up to date."""
    _done(tmp_path, "05_ppo-v3", {"b": 1})
    assert run.stage_state(tmp_path / "05_ppo-v3", {"b": 1}) == ("done", "")
    shutil.rmtree(tmp_path / "05_ppo-v3" / "adapter")
    record.record_results(tmp_path / "05_ppo-v3", {"b": 1}, {}, inputs={})  # the manifest agrees: it never wrote one
    assert run.stage_state(tmp_path / "05_ppo-v3", {"b": 1}) == ("incomplete", "incomplete: no adapter/*.safetensors")
    job = run.Job("05_ppo", "v3", {"b": 1})
    with pytest.raises(ParamsError, match=r"05_ppo-v3 \(incomplete: no adapter/\*.safetensors\)"):
        run.plan([job], tmp_path)
    assert run.plan([job], tmp_path, force=True) == ([job], [])


def test_weights_trained_under_an_older_tiny_tokenizer_are_stale_and_rerun_with_what_they_feed(tmp_path):
    """`tiny-llama`'s tokenizer is built by code: a run trained before it changed has the same params
    and files, but its ids mean other tokens now. The runner says so and reruns it (with --force)."""
    from recnb import llm

    today, older = llm.load_tokenizer(llm.TINY_LLAMA), llm.load_tokenizer(llm.TINY_LLAMA)
    older.add_tokens(["<a token of an older build>"])
    saved = {}
    for name, tok in (("today", today), ("older", older)):
        tok.save_pretrained(tmp_path / name)
        saved[name] = (tmp_path / name / "tokenizer.json").read_text()
    params = {"base_model": llm.TINY_LLAMA, "seed": 0}
    _done(tmp_path / "new", "04_sft_unsloth", params, files={"adapter/tokenizer.json": saved["today"]})
    assert run.stage_state(tmp_path / "new" / "04_sft_unsloth", params) == ("done", "")
    _done(tmp_path / "old", "04_sft_unsloth", params, files={"adapter/tokenizer.json": saved["older"]})
    _done(tmp_path / "old", "05_ppo", {"b": 1}, reads=["04_sft_unsloth"])
    state, why = run.stage_state(tmp_path / "old" / "04_sft_unsloth", params)
    assert state == "changed"
    assert why == f"trained with another tokenizer than its base model has today ({len(today) + 1} tokens; {len(today)} today)"
    # a stage that read those weights, checked on its own (--only 05_ppo), is stale too
    assert run.stage_state(tmp_path / "old" / "05_ppo", {"b": 1}) == ("changed", f"input 04_sft_unsloth: {why}")
    jobs = [run.Job("04_sft_unsloth", "", params), run.Job("05_ppo", "", {"b": 1})]
    with pytest.raises(ParamsError, match=r"04_sft_unsloth \(trained with another tokenizer.*--force"):
        run.plan(jobs, tmp_path / "old")
    todo, fresh = run.plan(jobs, tmp_path / "old", force=True)
    assert [j.name for j in todo] == ["04_sft_unsloth", "05_ppo"] and fresh == []
    hub = {"base_model": "org/model", "seed": 0}  # a Hub id or folder is read as it is: not checked
    _done(tmp_path / "hub", "04_sft_unsloth", hub, files={"adapter/tokenizer.json": saved["older"]})
    assert run.stage_state(tmp_path / "hub" / "04_sft_unsloth", hub) == ("done", "")
