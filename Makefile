# noex_lab developer commands. Only Python >= 3.11 and make are needed: everything else
# is installed into .venv by the first target that needs it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# JupyterLab refuses to run as root unless told; containers and CI often are root.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab test lint typecheck unit notebooks bench sim docs docs-serve clean test-browser test-wheel test-ssh

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "noex_lab needs Python >= 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[lab,test,fast]'
	@# an editable install skips the data files a wheel installs: JupyterLab's widget-state setting
	mkdir -p $(VENV)/share/jupyter/lab/settings/overrides.d
	cp jupyter-config/noex-lab-widgets.json $(VENV)/share/jupyter/lab/settings/overrides.d/
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_FLAGS)

lint: $(STAMP)
	$(BIN)/ruff check noex_lab tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict noex_lab

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests

notebooks: $(STAMP)
	XDG_CONFIG_HOME="$$(mktemp -d)" $(BIN)/python -m pytest -q --nbval --nbval-sanitize-with notebooks/sanitize.cfg \
		--nbval-cell-timeout=120 -p no:randomly notebooks

test: lint typecheck unit notebooks test-ssh

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# A long random campaign of the cluster simulator (noex_lab.sim; not part of `make test`, whose
# tests/sim runs a fixed set of seeds): SEEDS seeds of each SCENARIO ("random", "random_leaves",
# "random_storm": seeded random faults, with graceful leaves, four times as often; "fenced_faults": the
# nemesis under keep_majority, one owner checked at every instant; "all": every scenario), every failing seed appended to SIM_OUT with its violations and trace.
# Replay one with Simulation.replay(seed, scenario); PYTHONHASHSEED=0 keeps replays identical.
SEEDS     ?= 1000
SEED0     ?= 0
SCENARIO  ?= random random_leaves random_storm
SIM_OUT   ?= sim-failures.txt

sim: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/python -m noex_lab.sim --seeds $(SEEDS) --start $(SEED0) --out $(SIM_OUT) \
		$(if $(filter all,$(SCENARIO)),--all,$(addprefix --scenario ,$(SCENARIO)))

clean:
	rm -rf $(VENV) build dist *.egg-info

# The package outside the repository (tests/package): build the sdist and the wheel, twine check,
# install the wheel into fresh venvs (without extras, and with [lab]) and run the README example,
# the magics in a real kernel and `noex-lab demo` there. Needs PyPI for the venvs' dependencies.
WHEEL_STAMP := $(VENV)/.installed-wheel

$(WHEEL_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet build twine
	touch $(WHEEL_STAMP)

test-wheel: $(WHEEL_STAMP)
	$(BIN)/python -m pytest -q -p no:randomly -m wheel tests/package

DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[lab,test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The docs with search (Material's search does not work from file://), at http://127.0.0.1:8000
docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

# The browser test (tests/browser): JupyterLab in headless Debian chromium, driven by Python
# playwright. No browser download: playwright drives the system's chromium (installed here with
# apt-get when it is missing, which needs root).
CHROMIUM      ?= /usr/bin/chromium
BROWSER_STAMP := $(VENV)/.installed-browser

$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet playwright
	touch $(BROWSER_STAMP)

$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then \
		echo "$(CHROMIUM) is missing: install Debian's chromium (apt-get install -y chromium) as root, or set CHROMIUM=/path/to/chromium" >&2; \
		exit 1; \
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

test-browser: $(BROWSER_STAMP) $(CHROMIUM)
	mkdir -p tests/artifacts
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -p no:randomly -m browser tests/browser

# The SSH tests (tests/lab/test_remote_nodes.py, -m ssh): `%noex remote` against a real OpenSSH
# server that each test starts on 127.0.0.1 (a free port, its own host key and authorized key).
# Debian's openssh-server and openssh-client are installed here with apt-get when missing, which
# needs root. `make test` runs them: they are never skipped.
SSHD ?= /usr/sbin/sshd
SSH  ?= /usr/bin/ssh

$(SSHD) $(SSH):
	@if [ "$$(id -u)" != 0 ]; then \
		echo "$@ is missing: install Debian's OpenSSH (apt-get install -y openssh-server openssh-client) as root, or set SSHD=/path/to/sshd SSH=/path/to/ssh" >&2; \
		exit 1; \
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y openssh-server openssh-client

test-ssh: $(STAMP) $(SSHD) $(SSH)
	NOEX_TEST_SSHD=$(SSHD) NOEX_TEST_SSH=$(SSH) $(BIN)/python -m pytest -q -p no:randomly -m ssh tests/lab/test_remote_nodes.py
