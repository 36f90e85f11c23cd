# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

# Re-installs when pyproject.toml changes; the package is installed editable.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[all,dev]"
	touch $(STAMP)

demo: venv
	SHOAL=$(BIN)/shoal scripts/demo.sh

test: venv examples/node/node_modules
	$(BIN)/python -m pytest -q

# The Node.js example's packages, where npm is installed (its test skips, saying why, elsewhere).
# --ignore-scripts: the post-install step only fetches optional GPU files from the internet.
examples/node/node_modules: examples/node/package.json
	if command -v npm >/dev/null 2>&1; then \
		cd examples/node && npm install --ignore-scripts --no-audit --no-fund --silent; fi

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
