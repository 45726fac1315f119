# darkmatter: `make demo` and `make test` are the two commands in README.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint fashion-mnist wordnet espeak compose-tool chromium bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST from Debian (optional: the demo falls back to sklearn's digits without it).
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || \
	  { command -v apt-get >/dev/null && (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) ; } || \
	  echo "dataset-fashion-mnist not installed; the demo will use digits"

# WordNet from Debian: the built-in labelled text set `wordnet-glosses` (its tests skip without it).
wordnet:
	@test -f /usr/share/wordnet/data.noun || \
	  { command -v apt-get >/dev/null && (apt-get install -y -q wordnet-base >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wordnet-base >/dev/null 2>&1)) ; } || \
	  echo "wordnet-base not installed; wordnet-glosses will be unavailable"

# espeak-ng from Debian: the built-in speech set `spoken-words` is synthesised with it (its tests skip without it).
espeak:
	@command -v espeak-ng >/dev/null || \
	  { command -v apt-get >/dev/null && (apt-get install -y -q espeak-ng >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng >/dev/null 2>&1)) ; } || \
	  echo "espeak-ng not installed; spoken-words will be unavailable"

# docker-compose (Debian) validates docker-compose.yml in the tests; best effort, the test skips without it.
compose-tool:
	@command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || \
	  (command -v apt-get >/dev/null && apt-get install -y -q docker-compose >/dev/null 2>&1) || \
	  echo "docker-compose not installed; the compose check will be skipped"

# Debian's chromium for the dashboard's browser tests (Playwright drives it; no browser download).
# Best effort: the browser tests skip when it cannot be installed.
chromium:
	@command -v chromium >/dev/null || \
	  { command -v apt-get >/dev/null && (apt-get install -y -q chromium >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) ; } || \
	  echo "chromium not installed; the dashboard's browser tests will be skipped"

demo: $(STAMP) fashion-mnist wordnet espeak
	$(BIN)/darkmatter demo

lint: $(STAMP)
	$(BIN)/lint-imports

test: $(STAMP) fashion-mnist wordnet espeak compose-tool chromium
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# In-process speed/sanity check of every method, then every method's small recipe for one CPU budget through
# HTTP (hours on 2 cores; e.g. BENCH_ARGS="--methods simclr,mae --budget-s 60").
bench: $(STAMP) fashion-mnist wordnet
	$(BIN)/python benchmarks/methods.py
	$(BIN)/python benchmarks/text.py $(TEXT_BENCH_ARGS)
	$(BIN)/python -m benchmarks.word_vectors $(WORDVEC_BENCH_ARGS)
	$(BIN)/python benchmarks/recipes.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python -m benchmarks.train_throughput
	$(BIN)/python -m benchmarks.embed_serving
	$(BIN)/python -m benchmarks.embed_engine
	$(BIN)/python -m benchmarks.api_load

clean:
	rm -rf $(VENV) .darkmatter .pytest_cache test-artifacts
