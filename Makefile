# Gridwatch: `make demo` runs everything, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: demo test lint bench city clean help browser

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

# The browser tests drive Debian's Chromium and need a CJK font (installed once, if missing and possible).
BROWSER_PKGS := chromium chromium-driver fonts-noto-cjk
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
	    || ! test -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc; then \
	  echo "installing $(BROWSER_PKGS) (Debian packages) for the browser tests…"; \
	  { apt-get install -y -q --no-install-recommends $(BROWSER_PKGS) \
	    || { apt-get update -q && apt-get install -y -q --no-install-recommends $(BROWSER_PKGS); }; } >/dev/null 2>&1 \
	  || echo "could not install $(BROWSER_PKGS): the browser tests will be skipped (install them as root)"; \
	fi

test: $(STAMP) browser
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
