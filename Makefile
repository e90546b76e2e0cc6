# Gridwatch: `make demo` runs everything, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BENCHES := ingest access briefing dispatch drilldown import rules screen notify
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: demo test lint bench city clean help browser fonts

help:
	@echo "make demo   - run the whole system (embedded Redis, SQLite, worker, scheduler, simulator, web on :8050)"
	@echo "make test   - run the test suite (real Redis, real SQL)"
	@echo "make lint   - ruff and the import contracts (import-linter)"
	@echo "make bench  - print ingest throughput and latency figures"
	@echo "make city   - regenerate the synthetic city geometry"

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements into $(VENV) (first run takes a minute)…"
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

demo: $(STAMP) fonts
	$(PY) -m ingest demo

# Debian packages, installed once if missing and possible: the briefing PDF needs Pango and a CJK font; the tests
# also drive Chromium and read PDFs back with poppler-utils.
define apt_need
	@if ! { $(1); }; then \
	  echo "installing $(2) (Debian packages) $(3)…"; \
	  { apt-get install -y -q --no-install-recommends $(2) \
	    || { apt-get update -q && apt-get install -y -q --no-install-recommends $(2); }; } >/dev/null 2>&1 \
	  || echo "could not install $(2): $(4) (install them as root)"; \
	fi
endef
FONT_PKGS := fonts-noto-cjk libpango-1.0-0 libpangoft2-1.0-0
BROWSER_PKGS := $(FONT_PKGS) chromium chromium-driver poppler-utils
fonts:
	$(call apt_need,fc-list :lang=zh-cn | grep -q . && ldconfig -p | grep -q libpangoft2,$(FONT_PKGS),for the briefing PDF,the briefing PDF cannot be laid out)
browser:
	$(call apt_need,command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1 && fc-list :lang=zh-cn | grep -q .,$(BROWSER_PKGS),for the browser and PDF tests,those tests will be skipped)

test: $(STAMP) browser
	$(PY) -m ruff check .
	PYTHONPATH=. $(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q
	@# every benchmark still runs (small sizes; figures are printed, never asserted)
	@for b in $(BENCHES); do echo "--- python -m bench.$$b --quick"; $(PY) -m bench.$$b --quick || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check .
	PYTHONPATH=. $(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	$(PY) -m bench.ingest

city: $(STAMP)
	$(PY) scripts/generate_city.py

clean:
	rm -rf var/
