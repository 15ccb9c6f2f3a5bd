# Two commands do all set-up on a fresh machine:
#   make demo   -- the main job (offline): ILO scores of the embedded gemma-3-270m over 28 languages
#                  (CLDR parallel lexicon), per layer, into out/ilo/
#   make test   -- ruff + the whole test suite
# Each creates .venv and installs what it needs. torch is pinned to the CPU build first
# (pip install torch==2.13.0), so no dependency can pull a multi-GB CUDA build.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/interp ilo --model gemma-3-270m --data cldr --out out/ilo

lint: $(STAMP)
	$(VENV)/bin/ruff check interp tests benchmarks
	$(VENV)/bin/ruff format --check interp tests benchmarks

# pytest exits 5 when it collects no tests; report that instead of failing obscurely
test: lint
	$(PY) -m pytest -q -p no:cacheprovider tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(PY) benchmarks/extract.py

clean:
	rm -rf $(VENV)
