# Every target creates and uses its own venv; nothing is installed outside it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test demo bench bench-previews bench-big lint schema clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: $(BIN)/.installed
	-sh scripts/test_prereqs.sh
	$(BIN)/python scripts/fetch_uv_versions.py
	$(BIN)/python -m pytest -q

demo: $(BIN)/.installed
	$(BIN)/python scripts/demo.py

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run.py

bench-previews: $(BIN)/.installed
	$(BIN)/python benchmarks/previews.py

# Issue 14's million-file cache (about 15 minutes, 10 GB of disk, 3.5M inodes at its peak)
bench-big: $(BIN)/.installed
	$(BIN)/python benchmarks/big.py

# The store's readers and writers, derived from its pydantic models (uvrefs/store/codegen.py)
schema: $(BIN)/.installed
	$(BIN)/python -m uvrefs.store.codegen > uvrefs/store/fields.py.new
	mv uvrefs/store/fields.py.new uvrefs/store/fields.py

lint: $(BIN)/.installed
	$(BIN)/ruff check uvrefs tests scripts benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .demo .bench .bench-previews .pytest_cache
