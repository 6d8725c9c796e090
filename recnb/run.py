"""Run the pipeline's notebooks with papermill: `python -m recnb.run params/<name>.yaml`.

The YAML holds `run` (the outputs folder name), a `common:` block passed to every notebook that
has those parameters, and one block per stage (`02_sasrec:`) or stage variant
(`04_sft_unsloth:v1:`). An optional `paper:` mapping holds extra blocks (the ablation grid) that
run only with `--paper`; a block there with the same key as a main one replaces it.

Before anything runs, every block is checked against its stage's typed config (`recnb.params`):
unknown keys, types, ranges, allowed values, and references to other stage dirs (which this file
must produce or which must exist finished); the first problem ends the run in one line naming the
file, block, key, value and what is allowed. Like `make`, a run skips stages that are up to date: complete (`metrics.json`
written), recorded with the same parameters, and fed by no stage that runs now. A stage directory
that exists but is stale (incomplete, other parameters, or an upstream stage reruns) is never
written into without `--force`; `--rerun` reruns every selected stage. So `make paper` after
`make run` reuses the main path and runs only the ablations and the evaluation over them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recnb import artifacts as col
from recnb import paths, progress, record
from recnb.metrics import ILLEGAL
from recnb.params import MODEL_SOURCES, REF_MODELS, REF_STAGE_DIR, ParamsError, StageConfig
from recnb.tasks import NOCONTROL

RESERVED = ("run", "outputs_dir", "variant")
SOCKET_PATH_MAX = 100  # a Unix socket's path: at most 103 bytes on macOS, 107 on Linux


def stage_configs() -> dict[str, type[StageConfig]]:
    """Each stage's typed config (imported here: the stage packages load torch)."""
    from recnb.data import DataConfig
    from recnb.evaluation import EvalConfig
    from recnb.instructions import InstructionConfig
    from recnb.ppo import PPOConfig
    from recnb.report import ReportConfig
    from recnb.sasrec import SASRecConfig
    from recnb.sft import SFTConfig

    configs = (DataConfig, SASRecConfig, InstructionConfig, SFTConfig, PPOConfig, EvalConfig, ReportConfig)
    return {c.STAGE: c for c in configs}


@dataclass
class Job:
    """One notebook execution: a stage, its variant and the parameters papermill injects."""

    stage: str
    variant: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return paths.stage_dir_name(self.stage, self.variant)


def parse_block_key(key: str, source: str) -> tuple[str, str]:
    """`04_sft_unsloth:v1` -> (`04_sft_unsloth`, `v1`), with a clear error for unknown stages."""
    stage, _, variant = str(key).partition(":")
    if stage not in paths.STAGES:
        raise ParamsError(f"{source}: unknown stage block {key!r}; stages are {', '.join(paths.STAGES)}")
    if variant and not variant.replace("_", "").replace(".", "").isalnum():
        raise ParamsError(f"{source}: variant {variant!r} in {key!r} must be letters, digits, '_' or '.'")
    return stage, variant


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a params file must not say a thing twice.

    Merge keys (`<<: *anchor`) still work: what they bring in may be overridden, as YAML intends.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} appears twice (line {mark.line + 1}, column {mark.column + 1}); keep one", mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # "1e-4": a string to PyYAML (YAML 1.1)


def apply_overrides(cfg: dict, overrides: Sequence[str], source: str, with_paper: bool = True) -> dict:
    """A params mapping with `--set` overrides applied: `BLOCK.KEY=VALUE` or `run=NAME`.

    BLOCK is a block of the file (`05_ppo`, `04_sft_unsloth:v1`, `common`, or one under `paper:`; a
    block both at the top and under `paper:`, such as `06_eval`, changes in both) and VALUE is read as
    YAML (`0.5`, `1e-4`, `true`, `[I0, I2]`, `{SASRec: sasrec}`). Only the named block changes: one
    that copies another with `<<: *anchor` keeps what it copied. The stage's own checks
    then judge the value as they judge the file's. `run=NAME` takes NAME as it is written. Raises
    ParamsError, naming the override, for a malformed one, a block the file lacks (or has only under
    `paper:` when `with_paper` is False: the run would not read it), or a key that is no parameter of the
    block's notebook.
    """
    cfg = dict(cfg)
    if isinstance(cfg.get("paper"), dict):
        cfg["paper"] = dict(cfg["paper"])  # the caller's mapping stays as it was
    paper = cfg.get("paper") if isinstance(cfg.get("paper"), dict) else {}
    for item in overrides:
        name, equals, text = str(item).partition("=")
        block, dot, key = name.strip().rpartition(".")
        what = f"--set {item!r}"
        if not equals or not text.strip() or (name.strip() != "run" and not (dot and block and key)):
            raise ParamsError(f"{what}: write BLOCK.KEY=VALUE (e.g. 05_ppo.lr=1e-4) or run=NAME")
        if name.strip() == "run":
            cfg["run"] = text.strip()  # a folder name, not YAML ("2026-12-07" would read as a date)
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ParamsError(f"{what}: the value is not valid YAML: {' '.join(str(err).split())}") from None
        if isinstance(value, str) and _EXPONENT.fullmatch(text.strip()):
            value = float(text)
        homes = [h for h in (cfg, paper) if block in h and block not in ("run", "paper")]  # `--paper` reads both
        if block == "common":
            homes = [cfg]
            if key in RESERVED:
                raise ParamsError(f"{what}: {key!r} is set by the runner, not by common; use --set run=NAME "
                                  "or --outputs-dir")
        elif len(homes) == 1 and homes[0] is paper and not with_paper:
            raise ParamsError(f"{what}: {block!r} is a block under 'paper:' of {source}, which runs only with "
                              "--paper; add --paper")
        elif not homes:
            blocks = [b for b in cfg if b not in ("run", "paper")] + [f"paper: {b}" for b in paper]
            raise ParamsError(f"{what}: {source} has no block {block!r} (its blocks: {', '.join(blocks)})")
        else:
            stage, _ = parse_block_key(block, source)
            known = stage_configs()[stage].specs()
            if key not in known or key in RESERVED:
                raise ParamsError(f"{what}: {key!r} is not a parameter of notebooks/{stage}.ipynb "
                                  f"(its parameters: {', '.join(k for k in known if k not in RESERVED)})")
        for home in homes:
            current = home.get(block) or {}
            if not isinstance(current, dict):
                raise ParamsError(f"{what}: block {block!r} of {source} must be a mapping of parameter: value")
            home[block] = {**current, key: value}  # a copy: an anchored block may be shared
    return cfg


def load_jobs(params_file: str | Path, paper: bool = False, outputs_dir: str | None = None,
              overrides: Sequence[str] = ()) -> tuple[str, list[Job]]:
    """Read a params YAML into an ordered list of jobs, validating every key and value first.

    `overrides` are `--set` items (`apply_overrides`), applied before any check.
    """
    source = str(params_file)
    path = Path(params_file)
    if not path.exists():
        raise ParamsError(f"{source}: no such params file; see params/*.yaml for examples")
    try:
        cfg = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    if overrides:
        if not isinstance(cfg, dict):
            raise ParamsError(f"{source}: needs a top-level 'run: <name>' (the folder under outputs/)")
        cfg = apply_overrides(cfg, overrides, source, with_paper=paper)
        source = f"{source} with --set {' '.join(overrides)}"
    if not isinstance(cfg, dict) or not isinstance(cfg.get("run"), str):
        raise ParamsError(f"{source}: needs a top-level 'run: <name>' (the folder under outputs/)")
    run = cfg.pop("run")
    common = cfg.pop("common", None) or {}
    extra = cfg.pop("paper", None) or {}
    if not isinstance(common, dict) or not isinstance(extra, dict):
        raise ParamsError(f"{source}: 'common' and 'paper' must be mappings")
    blocks = dict(cfg)
    if paper:
        blocks.update(extra)
    jobs = _jobs_from_blocks(blocks, common, run, source, outputs_dir)
    check_jobs(jobs, source, paths.run_dir(outputs_dir or "outputs", run))
    return run, jobs


def _jobs_from_blocks(blocks: dict, common: dict, run: str, source: str, outputs_dir: str | None) -> list[Job]:
    configs = stage_configs()
    jobs, seen_common = [], set()
    for key, block in blocks.items():
        stage, variant = parse_block_key(key, source)
        block = block or {}
        if not isinstance(block, dict):
            raise ParamsError(f"{source}: block {key!r} must be a mapping of parameter: value")
        known = configs[stage].specs()
        for name in block:
            if name not in known or name in RESERVED:
                raise ParamsError(
                    f"{source}: {key}.{name} is not a parameter of notebooks/{stage}.ipynb "
                    f"(its parameters: {', '.join(k for k in known if k not in RESERVED)})"
                )
        if variant and "variant" not in known:
            raise ParamsError(f"{source}: {key!r}: notebooks/{stage}.ipynb takes no variants")
        shared = {k: v for k, v in common.items() if k in known}
        seen_common.update(shared)
        # Every parameter is injected, the defaults resolved here: what a stage runs with never depends
        # on its notebook's parameters cell (which holds the tiny batch, for a notebook opened alone).
        params = {**configs[stage].defaults(), **shared, **block}
        params["run"] = run
        if outputs_dir is not None:
            params["outputs_dir"] = outputs_dir
        if "variant" in known:
            params["variant"] = variant
        jobs.append(Job(stage, variant, params))
    unused = set(common) - seen_common
    if unused:
        raise ParamsError(f"{source}: common key(s) {', '.join(sorted(unused))} are parameters of no notebook")
    jobs.sort(key=lambda j: paths.STAGES.index(j.stage))  # stable: variants keep their file order
    return jobs


def check_jobs(jobs: list[Job], source: str, out_root: Path) -> None:
    """Every job's values against its stage's typed config, then every reference to a stage dir.

    A reference is fine when this file has a job of that name, or the dir exists finished in the run.
    """
    configs = stage_configs()
    names = {j.name for j in jobs}
    for job in jobs:
        config = configs[job.stage]
        problems = config.check(job.params)
        values = {**config.defaults(), **job.params}
        for key, spec in config.specs().items():
            targets = []
            if spec.ref == REF_STAGE_DIR and values[key]:
                targets = [values[key]]
            elif spec.ref == REF_MODELS and isinstance(values[key], dict):
                targets = [v for v in values[key].values() if isinstance(v, str) and v not in MODEL_SOURCES]
            for target in targets:
                if target not in names and not (out_root / target / col.METRICS_FILE).exists():
                    problems.append(f"{key} names {target!r}, which this file does not produce and "
                                    f"{out_root} does not hold finished; stage dirs here: {', '.join(sorted(names))}")
        if problems:
            raise ParamsError(f"{source}: {job.name}.{problems[0]}")


def select_jobs(jobs: list[Job], only: str | None = None, start: str | None = None) -> list[Job]:
    """Filter by `--only` (a stage, stage number or `stage:variant`) or `--from` (a stage)."""

    def matches(job: Job, spec: str) -> bool:
        stage, _, variant = spec.partition(":")
        stage_ok = job.stage == stage or job.stage.split("_")[0] == stage
        return stage_ok and (not variant or job.variant == variant)

    for spec in (only, start):
        if spec and not any(matches(j, spec) for j in jobs):
            raise ParamsError(f"stage {spec!r} is not in this params file; it has {', '.join(j.name for j in jobs)}")
    if only:
        return [j for j in jobs if matches(j, only)]
    if start:
        first = next(i for i, j in enumerate(jobs) if matches(j, start))
        return jobs[first:]
    return jobs


EVAL_STAGES = ("06_eval", "07_case_study")  # they read every variant's outputs, not only the main path's
MODEL_STAGES = ("04_sft_unsloth", "05_ppo")  # stage 06 reads their dirs only where its `models` name them


def feeds(upstream: Job, job: Job) -> bool:
    """Whether `job` may read `upstream`'s outputs: main-path stages feed every later stage,
    model variants (`04_sft_unsloth:v1`) feed only the evaluation stages, and an evaluation variant
    (`06_eval:long`, a side table) feeds nothing (stage 07 reads the main `06_eval/`).

    Stage 06 reads a model dir (`04_sft_unsloth[-v]`, `05_ppo[-v]`) only where its `models` name it, so
    a table of v2 alone neither waits for a stale PPO stage nor reruns when one reruns. A named PPO dir
    brings every SFT dir with it: its adapters load on top of the SFT model its `sft_dir` names.
    """
    earlier = paths.STAGES.index(upstream.stage) < paths.STAGES.index(job.stage)
    if upstream.variant and upstream.stage in EVAL_STAGES:
        return False
    models = job.params.get("models")
    if job.stage == "06_eval" and upstream.stage in MODEL_STAGES and isinstance(models, dict):
        named = {str(source) for source in models.values()}
        ppo_named = any(stage_of(Path(source)) == "05_ppo" for source in named)
        return earlier and (upstream.name in named or (upstream.stage == "04_sft_unsloth" and ppo_named))
    return earlier and (not upstream.variant or job.stage in EVAL_STAGES)


def stage_of(target: Path) -> str | None:
    """The stage a stage dir belongs to (`05_ppo` for `05_ppo` and `05_ppo-v3`); None for another dir."""
    return next((s for s in paths.STAGES if target.name == s or target.name.startswith(f"{s}-")), None)


def missing_outputs(target: Path) -> list[str]:
    """The files of `col.REQUIRED_OUTPUTS` that the stage dir `target` (`05_ppo`, `05_ppo-v3`) lacks."""
    return [pattern for pattern in col.REQUIRED_OUTPUTS.get(stage_of(target), ()) if not any(target.glob(pattern))]


def stage_state(target: Path, params: dict[str, Any]) -> tuple[str, str]:
    """(`state`, why) of a stage directory against the params it would run with.

    `missing`; `incomplete` (no metrics.json: it never finished; or a file its readers need,
    `col.REQUIRED_OUTPUTS`, is absent); `changed` (recorded params differ,
    its files differ from the manifest it recorded, or an upstream stage it read changed since);
    or `done`. `why` says what, for messages.
    """
    if not target.exists():
        return "missing", "missing"
    if not (target / col.METRICS_FILE).exists():
        return "incomplete", "incomplete"
    try:
        recorded = record.read_json(target / col.PARAMS_FILE)
    except (OSError, ValueError):  # missing or malformed: nothing says these params made it
        return "changed", "params.json unreadable"
    # `variant` names the directory itself (checked by its name); `outputs_dir` is where the run lives,
    # not what it computes (inputs are matched by content), so a run copied elsewhere stays up to date,
    # except a stage that also writes beside the run (07's figures), which must rerun where they are missing
    stage = stage_of(target)
    ignored = {"variant"} | ({"outputs_dir"} if stage not in col.WRITES_BESIDE_RUN else set())
    # A parameter the recorded run does not name was added to the stage after it ran; a new parameter's
    # default keeps the stage's earlier behaviour (CONTRACTS.md), so at its default it changes nothing.
    defaults = stage_configs()[stage].defaults() if stage in paths.STAGES else {}
    absent = object()
    for key, value in params.items():
        value = _plain(value)
        was = recorded.get(key, absent)
        if key in ignored or value == was or (was is absent and key in defaults and value == _plain(defaults[key])):
            continue
        return "changed", "params changed"
    retokenized = _tokenizer_change(target, recorded)
    if retokenized:
        return "changed", retokenized
    changes = record.stage_changes(target)
    if changes:
        shown = ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
        return "changed", f"{shown} since it ran"
    lacking = missing_outputs(target)
    if lacking:
        return "incomplete", f"incomplete: no {', '.join(lacking)}"
    return "done", ""


def _tokenizer_change(target: Path, recorded: dict[str, Any]) -> str | None:
    """Why a stage's saved weights, or those of a stage it read (05 and 06 read 04's), no longer fit
    their built-in base model's tokenizer; None where they fit.

    Params and files do not show it: `tiny-llama`'s tokenizer is built by code, so a code change can
    give it other ids (a Hub id or folder is read as it is, and is not checked here).
    """
    try:
        upstream = list(record.read_json(target / col.INPUTS_FILE))
    except (OSError, ValueError):  # no inputs.json: stage_changes says so
        upstream = []
    for stage_dir in [target, *(target.parent / name for name in upstream)]:
        params = recorded if stage_dir == target else _recorded_params(stage_dir)
        why = _weights_tokenizer_change(stage_dir, params.get("base_model"))
        if why:
            return why if stage_dir == target else f"input {stage_dir.name}: {why}"
    return None


def _recorded_params(stage_dir: Path) -> dict[str, Any]:
    try:
        return record.read_json(stage_dir / col.PARAMS_FILE)
    except (OSError, ValueError):  # its own state check reports it
        return {}


def _weights_tokenizer_change(stage_dir: Path, base: str | None) -> str | None:
    from recnb import llm  # torch and transformers: only for stages that saved weights

    if base not in llm.BASE_MODELS or not (stage_dir / col.ADAPTER_DIR / "tokenizer.json").exists():
        return None
    return llm.tokenizer_change(stage_dir / col.ADAPTER_DIR, _base_tokenizer(base))


@functools.cache
def _base_tokenizer(name: str):
    """A built-in base model's tokenizer, loaded once per process (the state checks only read it)."""
    from recnb import llm

    return llm.load_tokenizer(name)


def _plain(value: Any) -> Any:
    """A value as params.json gives it back (tuples as lists)."""
    return json.loads(json.dumps(value))


def plan(jobs: list[Job], out_root: Path, force: bool = False, rerun: bool = False,
         context: list[Job] | None = None) -> tuple[list[Job], list[Job]]:
    """Split `jobs` into (to run, up to date); raise if a stale stage directory would be overwritten
    without `force`, or if a stage that runs would read an upstream stage of `context` (all jobs of
    the params file; default `jobs`) that is not up to date and does not run now.

    A stage reruns when it is missing, stale, or fed by a stage that runs now.
    """
    todo, fresh, blocked = [], [], []
    for job in jobs:
        state, why = stage_state(out_root / job.name, job.params)
        upstream = [j.name for j in todo if feeds(j, job)]
        if state == "done" and not upstream and not rerun:
            fresh.append(job)
            continue
        if state != "missing" and not (force or rerun):
            blocked.append(f"{job.name} ({f'{upstream[0]} reruns' if state == 'done' else why})")
        todo.append(job)
    if blocked:
        raise ParamsError(f"{out_root}: {', '.join(blocked)} already exist(s); pass --force to rerun them, "
                          "or pick another 'run' name")
    _check_upstream(todo, context if context is not None else jobs, out_root)
    return todo, fresh


def _check_upstream(todo: list[Job], context: list[Job], out_root: Path) -> None:
    """Refuse to run a stage on an upstream stage of the params file that is stale and not rerun now."""
    running = {j.name for j in todo}
    for job in todo:
        for up in context:
            if up.name in running or not feeds(up, job):
                continue
            state, why = stage_state(out_root / up.name, up.params)
            if state != "done":
                raise ParamsError(
                    f"{out_root}: {job.name} reads {up.name}, which is not up to date ({why}); rerun it first "
                    f"(--from {up.name} --force, or --only {up.name} --force)")


def execute(jobs: list[Job], run: str, outputs_dir: str = "outputs", force: bool = False, log_output: bool = False,
            rerun: bool = False, context: list[Job] | None = None) -> None:
    """Run the jobs that are not up to date, in order; stop at the first failure with the stage, cell and error."""
    import papermill
    from nbclient.exceptions import DeadKernelError
    from tqdm.auto import tqdm

    out_root = paths.run_dir(outputs_dir, run)
    jobs, fresh = plan(jobs, out_root, force, rerun, context)  # refuse before running anything
    for job in fresh:
        print(f"{job.name}: up to date, skipped ({out_root / job.name}; --rerun to run it again)")
    if not jobs:
        return
    nb_dir = out_root / "notebooks"
    nb_dir.mkdir(parents=True, exist_ok=True)
    # kernels inherit it: peft writes target_modules from a set, whose order follows the hash seed
    os.environ.setdefault("PYTHONHASHSEED", "0")
    # no Hugging Face widget saved at its first frame ("Loading weights", trl's dataset preparation: 0 %)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # on POSIX, kernels listen on Unix sockets in this process's own temporary directory (`kernel_logged_to`)
    sockets = tempfile.TemporaryDirectory(prefix="recnb-kernels-") if os.name == "posix" else None
    socket_prefix = sockets and os.path.join(sockets.name, "k")
    if socket_prefix and len(socket_prefix) + len("-99") > SOCKET_PATH_MAX:  # a long TMPDIR: TCP as before
        sockets.cleanup()
        sockets = socket_prefix = None
    # the bar is closed on failure too: the error gets its own line
    with sockets or contextlib.nullcontext(), tqdm(jobs, desc=f"run {run}", unit="stage") as bar:
        for job in bar:
            bar.set_postfix_str(job.name)
            (out_root / job.name / col.METRICS_FILE).unlink(missing_ok=True)  # a rerun is incomplete until it ends
            t0 = time.time()
            kernel_log = nb_dir / f"{job.name}.kernel.log"
            status = nb_dir / f"{job.name}.progress"
            status.unlink(missing_ok=True)
            os.environ[progress.ENV] = str(status)  # the kernel inherits it: recnb's loops report there
            stop_watching = progress.watch(status, lambda line, name=job.name: bar.set_postfix_str(f"{name}: {line}"))
            try:
                papermill.execute_notebook(
                    str(paths.notebook_path(job.stage)),
                    str(nb_dir / f"{job.name}.ipynb"),
                    parameters=job.params,
                    kernel_name=paths.KERNEL_NAME,
                    cwd=str(paths.REPO_ROOT / "notebooks"),
                    progress_bar=False,
                    log_output=log_output,
                    kernel_manager_class=kernel_logged_to(kernel_log, socket_prefix),
                    coalesce_streams=True,  # a text bar's frames collapse into its last line
                )
            except papermill.PapermillExecutionError as err:
                raise StageFailed(
                    f"stage {job.name} failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
                    f"(executed notebook: {nb_dir / f'{job.name}.ipynb'})"
                ) from None
            except DeadKernelError:
                raise StageFailed(
                    f"stage {job.name}: its kernel died (most likely out of memory, or killed); lower the stage's "
                    f"batch sizes or free memory, then rerun it with --force (executed notebook so far: "
                    f"{nb_dir / f'{job.name}.ipynb'})"
                ) from None
            finally:
                stop_watching()
                os.environ.pop(progress.ENV, None)
                status.unlink(missing_ok=True)
            bar.set_postfix_str(job.name)
            seconds = time.time() - t0
            record_seconds(out_root / job.name, seconds)
            tqdm.write(f"{job.name}: done in {seconds:.1f}s -> {out_root / job.name}")


def kernel_logged_to(log_file: Path, socket_prefix: str | None = None) -> type:
    """A kernel manager whose kernel process writes its own stdout/stderr to `log_file`.

    What a cell prints reaches the notebook over ZMQ either way; the process streams carry only the
    kernel's own log lines (the shutdown's KeyboardInterrupt; over TCP, ipykernel's note that the link
    is unencrypted), which would otherwise interleave with the run's progress bar. They stay
    readable in `<run>/notebooks/<stage>.kernel.log`.

    With `socket_prefix` (an absolute path no other process uses: `execute` passes one in its own
    temporary directory on POSIX systems, unless that path would pass `SOCKET_PATH_MAX`), the kernel
    listens on Unix sockets `<socket_prefix>-1` to `-5` instead of TCP ports. Over TCP, jupyter_client picks five free ports, closes them and lets the
    kernel bind them a moment later, so a kernel that another run starts meanwhile (`tiny_seeds
    --jobs 2`, two batches at once) can take one: the stage then fails with "Kernel died before
    replying to kernel_info" ("Address already in use" in its kernel log). jupyter_client's own IPC
    default, `kernel-ipc` in the current directory, is shared by every kernel started there.
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_client.localinterfaces import localhost
    from traitlets import default

    class LoggedKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "tcp" if socket_prefix is None else "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return localhost() if socket_prefix is None else socket_prefix

        async def start_kernel(self, **kw):
            handle = open(log_file, "a")  # noqa: ASYNC230, SIM115 - a local file, opened once per stage
            kw.setdefault("stdout", handle)
            kw.setdefault("stderr", handle)
            try:
                return await super().start_kernel(**kw)
            finally:
                handle.close()  # the child has its own copy of the descriptor

    return LoggedKernelManager


def record_seconds(stage_dir: Path, seconds: float) -> None:
    """Add the stage's wall time (`stage_seconds`: kernel start to last cell) to its `metrics.json`.

    metrics.json is outside the stage's manifest, so adding a key changes no digest downstream.
    """
    metrics_file = stage_dir / col.METRICS_FILE
    if not metrics_file.exists():
        raise StageFailed(f"stage {stage_dir.name} ended without writing {metrics_file}; its notebook must end "
                          "with record.record_results")
    record.write_json(metrics_file, {**record.read_json(metrics_file), "stage_seconds": round(seconds, 1)})


def run_summary(out_root: Path, outputs_dir: str = "outputs") -> list[str]:
    """What a finished run shows, for the end of the console output: the teacher's HR@10, the SFT
    category probe, RL's paired reward check, per model of stage 06 the control figures and the
    illegal items (fuzzy matching), where the tables, figures and executed notebooks are, and what to
    open next. Only the parts whose files exist."""
    import pandas as pd

    lines = [f"run {out_root.name}: {out_root}"]
    teacher = out_root / "02_sasrec" / col.METRICS_FILE
    if teacher.exists():
        test = record.read_json(teacher).get("test", {})
        lines.append(f"  SASRec teacher, full ranking: HR@10 {test.get('hr@10', float('nan')):.3f}, "
                     f"NDCG@10 {test.get('ndcg@10', float('nan')):.3f}")
    sft_metrics = out_root / "04_sft_unsloth" / col.METRICS_FILE
    if sft_metrics.exists():
        probe = record.read_json(sft_metrics).get("category_probe", {})
        if probe:
            shown = ", ".join(f"{name} {p['category_auc']:.2f}" + ("" if p.get("category_auc_se") is None
                                                                  else f"±{p['category_auc_se']:.2f}")
                              for name, p in probe.items() if p.get("category_auc") is not None)
            lines.append(f"  SFT category probe (P(in-C title outscores out-of-C) under 'more C', 0.5 = chance): {shown}")
    rl_metrics = out_root / "05_ppo" / col.METRICS_FILE
    gain = record.read_json(rl_metrics).get("reward_gain") if rl_metrics.exists() else None
    if gain:
        lines.append(f"  RL's own reward, sampled on {gain['prompts']} valid prompts, last actor − SFT start (paired 95 % "
                     f"interval): {gain['delta']:+.3f} [{gain['lo']:+.3f}, {gain['hi']:+.3f}]")
    summary_file = out_root / "06_eval" / col.SUMMARY_FILE
    if (out_root / "06_eval" / col.METRICS_FILE).exists() and summary_file.exists():
        s = pd.read_csv(summary_file)
        s = s[s["matcher"] == "fuzzy"].set_index(["model", "test_group"])

        def cell(model: str, group: str, metric: str) -> float:
            return float(s.loc[(model, group), metric]) if (model, group) in s.index and metric in s else float("nan")

        def pm(model: str, group: str, metric: str, digits: int = 0) -> str:
            half = (cell(model, group, metric + "_hi") - cell(model, group, metric + "_lo")) / 2
            return f"{cell(model, group, metric):.{digits}f}" + ("" if math.isnan(half) else f"±{half:.{digits}f}")

        effects_file = out_root / "06_eval" / "control_effects.csv"
        effects = pd.read_csv(effects_file) if effects_file.exists() else None
        if effects is not None:
            effects = effects[effects.get("matcher", pd.Series("fuzzy", index=effects.index)) == "fuzzy"]
            effects = effects.set_index(["model", "test_group"])

        def effect(model: str, group: str) -> str:
            if effects is None or (model, group) not in effects.index:
                return "–"
            e = effects.loc[(model, group)]
            bounds = "" if math.isnan(e["delta_lo"]) else f" [{e['delta_lo']:+.0f},{e['delta_hi']:+.0f}]"
            return f"{e['delta']:+.0f}{bounds}"

        lines.append("  stage 06 (fuzzy matching; ± half the 95 % interval over users; (…) = without the control "
                     "sentence; Δ = with − without, paired 95 % interval):")
        lines.append(f"    {'model':18s} {'I0 HR@10':>12s} {'TCP(+C) %':>14s} {'Δ':>13s} {'TCP(-C) %':>14s} {'Δ':>13s} "
                     f"{'CPA ≤/≈/≥ %':>12s} {'illegal I0 %':>12s}")
        for model in dict.fromkeys(s.index.get_level_values("model")):
            cpa = "/".join(f"{cell(model, g, 'cpa_pct'):.0f}" for g in ("I2<=20", "I2~=30", "I2>=30"))
            illegal = sum(cell(model, "I0", m) for m in ILLEGAL)
            tcp = [f"{pm(model, g, 'tcp_pct')} ({cell(model, g + NOCONTROL, 'tcp_pct'):.0f})" for g in ("I1+C", "I1-C")]
            lines.append(f"    {model:18s} {pm(model, 'I0', 'hr', 3):>12s} {tcp[0]:>14s} {effect(model, 'I1+C'):>13s} "
                         f"{tcp[1]:>14s} {effect(model, 'I1-C'):>13s} {cpa:>12s} {illegal:12.1f}")
        starts_file = out_root / "06_eval" / "start_effects.csv"
        starts = pd.read_csv(starts_file) if starts_file.exists() else pd.DataFrame(columns=["figure"])
        for _, e in starts[starts["figure"] == "illegal_item_pct"].iterrows():
            lines.append(f"    {e['model']} over {e['start']} (its start), illegal {e['test_group']} items, "
                         f"same users, {e['matcher']}: {e['delta']:+.1f} [{e['delta_lo']:+.1f}, "
                         f"{e['delta_hi']:+.1f}] points")
        lines.append(f"  tables:    {out_root / '06_eval'}/table2.md … table5.md (CSV beside each)")
    times = {d.name: record.read_json(d / col.METRICS_FILE).get("stage_seconds")
             for d in sorted(out_root.iterdir()) if (d / col.METRICS_FILE).exists()} if out_root.exists() else {}
    times = {name: t for name, t in times.items() if t is not None}
    if times:
        lines.append("  stage times: " + ", ".join(f"{name} {t:.0f}s" for name, t in times.items())
                     + f"; total {sum(times.values()) / 60:.1f} min")
    figures = paths.figures_dir(outputs_dir, out_root.name, create=False)
    if figures.exists() and any(figures.iterdir()):
        lines.append(f"  figures:   {figures}/")
    if (out_root / "07_case_study" / "case_I1.md").exists():
        lines.append(f"  cases:     {out_root / '07_case_study'}/case_I1.md, case_I2.md")
    if (out_root / "notebooks").exists():
        lines.append(f"  notebooks: {out_root / 'notebooks'}/ (executed)")
        lines.append("  next:      make lab, then open the executed notebooks or the tables above")
    return lines


class StageFailed(RuntimeError):
    """A notebook raised; earlier stages' outputs are left as they were."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recnb.run", description=__doc__.splitlines()[0])
    ap.add_argument("params", help="params/<name>.yaml")
    ap.add_argument("--only", help="run one stage (e.g. 02_sasrec, 02, or 04_sft_unsloth:v1)")
    ap.add_argument("--from", dest="start", help="run from this stage to the end")
    ap.add_argument("--force", action="store_true",
                    help="rerun stale stages whose directories exist (up-to-date stages are still skipped)")
    ap.add_argument("--rerun", action="store_true", help="rerun every selected stage, even when up to date")
    ap.add_argument("--paper", action="store_true", help="also run the 'paper:' ablation blocks")
    ap.add_argument("--outputs-dir", default="outputs", help="root of all runs (default: outputs/)")
    ap.add_argument("--log-output", action="store_true", help="stream notebook output to the terminal")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                    help="override one parameter of the file, e.g. 05_ppo.lr=1e-4, common.seed=3 or run=NAME "
                         "(repeatable; only the named block changes)")
    args = ap.parse_args(argv)
    try:
        run, every = load_jobs(args.params, paper=args.paper, outputs_dir=args.outputs_dir, overrides=args.overrides)
        jobs = select_jobs(every, args.only, args.start)
        execute(jobs, run, args.outputs_dir, force=args.force, log_output=args.log_output, rerun=args.rerun,
                context=every)
    except (ParamsError, StageFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(run_summary(paths.run_dir(args.outputs_dir, run), args.outputs_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
