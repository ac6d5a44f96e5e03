# Flumery: `make run` runs a demo agent on embedded defaults; `make test` installs and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast chaos bench docs lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The demo agent: netcat on 44444 and HTTP on 41410 -> memory channel -> logger and file_roll in var/demo-out.
run: install
	@mkdir -p var
	@echo "Flumery demo agent (deploy/demo.conf). Send it events from another terminal:"
	@echo "  curl -d '[{\"headers\": {\"host\": \"web1\"}, \"body\": \"hello\"}]' http://127.0.0.1:41410/"
	@echo "  bash -c 'exec 3<>/dev/tcp/127.0.0.1/44444; echo hello over netcat >&3; head -n1 <&3'   # or: nc 127.0.0.1 44444"
	@echo "Each event is logged below by the logger sink and written to var/demo-out/ by the file_roll sink."
	@echo "Metrics: http://127.0.0.1:34545/metrics.  Ctrl-C stops cleanly; undelivered events wait in var/demo-data."
	$(BIN)/flumery agent -f deploy/demo.conf -n demo --data-dir var/demo-data --metrics-port 34545 --metrics-bind 127.0.0.1

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m 'not slow and not chaos'

# The long fault-injection runs (about 15 minutes): prints the table of sent/delivered/lost/duplicated/recovery.
chaos: install
	$(BIN)/python tests/chaos.py --long

# Throughput: 1,000,000 access-log lines (bench/make_access_log.py) exec -> file channel -> file_roll, beside
# syslog-ng if it is installed.  `make bench INSTALL_SYSLOG_NG=1` (as root) first installs Debian's syslog-ng-core
# to compare with; without it, nothing is installed.
bench: install
ifeq ($(INSTALL_SYSLOG_NG),1)
	@command -v syslog-ng >/dev/null || [ -x /usr/sbin/syslog-ng ] || { \
		echo "INSTALL_SYSLOG_NG=1: installing Debian's syslog-ng-core (apt-get install syslog-ng-core) to compare with"; \
		apt-get install -y -q syslog-ng-core >/dev/null; }
else
	@command -v syslog-ng >/dev/null || [ -x /usr/sbin/syslog-ng ] || \
		echo "syslog-ng is not installed: benchmarking Flumery alone (make bench INSTALL_SYSLOG_NG=1, as root, installs Debian's syslog-ng-core to compare with)"
endif
	$(BIN)/python bench/run.py

docs: install
	$(BIN)/python -m app.reference --write

# Static checks: ruff (rules in pyproject.toml) and the import layers (import-linter contracts in pyproject.toml:
# app > workers > routing > core, nothing of Flumery below core).
lint: install
	$(BIN)/pip install --quiet -e '.[lint]'
	$(BIN)/ruff check core app workers routing tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var *.egg-info
