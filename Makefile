# Flumery: `make run` runs a demo agent on embedded defaults; `make test` installs and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast chaos bench bench-avro docs lint clean avro-peer-deps

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
	@echo "  echo 'hello over netcat' | nc 127.0.0.1 44444"
	@echo "Each event is logged below by the logger sink and written to var/demo-out/ by the file_roll sink."
	@echo "Metrics: http://127.0.0.1:34545/metrics.  Ctrl-C stops cleanly; undelivered events wait in var/demo-data."
	$(BIN)/flumery agent -f deploy/demo.conf -n demo --data-dir var/demo-data --metrics-port 34545

# The avro tests run Avro's own Java IPC (tests/avro_peer.py): javac and java come from Debian's
# openjdk-17-jdk-headless, installed here when run as root; the Avro and netty jars come from the pyspark 2.4.8
# sdist on PyPI, downloaded once by the tests (into ~/.cache/flumery/hadoop, shared with the HDFS tests).
# Without Java those tests fail, they do not skip.
AVRO_PEER_DEBS := openjdk-17-jdk-headless
avro-peer-deps:
	@command -v javac >/dev/null && exit 0; command -v dpkg >/dev/null || exit 0; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing for the avro tests (apt-get): $(AVRO_PEER_DEBS)"; \
		apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(AVRO_PEER_DEBS) >/dev/null; \
	else \
		echo "the avro tests need javac: apt-get install -y $(AVRO_PEER_DEBS) as root"; \
	fi

test: install avro-peer-deps
	$(BIN)/python -m pytest -q

test-fast: install avro-peer-deps
	$(BIN)/python -m pytest -q -m 'not slow and not chaos'

# The long fault-injection runs (about 15 minutes): prints the table of sent/delivered/lost/duplicated/recovery.
chaos: install
	$(BIN)/python tests/chaos.py --long

# Throughput: 1,000,000 access-log lines exec -> file channel -> file_roll, beside syslog-ng (Debian syslog-ng-core).
bench: install
	@command -v syslog-ng >/dev/null || [ -x /usr/sbin/syslog-ng ] || \
		( [ "$$(id -u)" = 0 ] && apt-get install -y -q syslog-ng-core >/dev/null ) || \
		echo "syslog-ng not installed (apt-get install syslog-ng-core); benchmarking Flumery alone"
	$(BIN)/python bench/run.py

# Events/s over one avro hop (tier-1 -> collector -> null sink), beside the Java peer client -> Java peer server.
bench-avro: install avro-peer-deps
	$(BIN)/python bench/avro_hop.py

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
