# Gridwatch: `make demo` runs everything, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: demo test lint bench city clean help

help:
	@echo "make demo   - run the whole system (embedded Redis, SQLite, worker, scheduler, simulator, web on :8050)"
	@echo "make test   - run the test suite (real Redis, real SQL)"
	@echo "make lint   - ruff"
	@echo "make bench  - print ingest throughput and latency figures"
	@echo "make city   - regenerate the synthetic city geometry"

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements into $(VENV) (first run takes a minute)…"
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ingest demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m bench.ingest

city: $(STAMP)
	$(PY) scripts/generate_city.py

clean:
	rm -rf var/
