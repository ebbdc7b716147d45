# meterhub: `make run` starts everything on embedded defaults; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench install lint translations vendor clean-instance chromium screenshots

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[embedded,test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/meterhub run

# Browser tests drive Debian's Chromium (Playwright cannot download browsers here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); } || \
	  echo "warning: chromium is not installed; browser tests will fail (apt-get install chromium)"

test: $(STAMP) chromium
	$(VENV)/bin/pytest -q

# Every console page for every demo role (1440x900) and every portal page on a phone (390x844), zh_CN and
# English, into screenshots/ (not committed): starts the demo on free ports. Needs chromium + fonts-noto-cjk.
screenshots: $(STAMP) chromium
	@[ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq fonts-noto-cjk >/dev/null; } || \
	  echo "warning: fonts-noto-cjk is not installed; Chinese pages will show boxes (apt-get install fonts-noto-cjk)"
	$(PY) scripts/screenshots.py --out screenshots

bench: $(STAMP)
	$(PY) -m bench

# Extract, update the zh_CN catalog and compile it (then translate what `--check` lists).
translations: $(STAMP)
	$(PY) webui/translations/update.py
	$(PY) webui/translations/update.py --check

# Front-end libraries come from npm (webui/package-lock.json) and are served from webui/static/vendor,
# committed so that `make run` needs no Node.js; `make vendor` refreshes them.
vendor:
	cd webui && npm ci --no-audit --no-fund
	cp webui/node_modules/chart.js/dist/chart.umd.min.js webui/static/vendor/chart.umd.min.js
	cp webui/node_modules/chart.js/LICENSE.md webui/static/vendor/chart.js.LICENSE.md
	cp webui/node_modules/axe-core/axe.min.js tests/browser/vendor/axe.min.js  # accessibility checks, tests only
	cp webui/node_modules/axe-core/LICENSE tests/browser/vendor/axe-core.LICENSE
	cp webui/node_modules/bootstrap/dist/css/bootstrap.min.css webui/static/vendor/bootstrap.min.css
	cp webui/node_modules/bootstrap/dist/js/bootstrap.bundle.min.js webui/static/vendor/bootstrap.bundle.min.js
	cp webui/node_modules/bootstrap/LICENSE webui/static/vendor/bootstrap.LICENSE
	mkdir -p webui/static/vendor/fonts
	cp webui/node_modules/bootstrap-icons/font/bootstrap-icons.min.css webui/static/vendor/bootstrap-icons.min.css
	cp webui/node_modules/bootstrap-icons/font/fonts/bootstrap-icons.woff2 webui/node_modules/bootstrap-icons/font/fonts/bootstrap-icons.woff webui/static/vendor/fonts/
	cp webui/node_modules/bootstrap-icons/LICENSE webui/static/vendor/bootstrap-icons.LICENSE
	cp webui/node_modules/htmx.org/dist/htmx.min.js webui/static/vendor/htmx.min.js
	cp webui/node_modules/htmx.org/LICENSE webui/static/vendor/htmx.LICENSE

lint: $(STAMP)
	$(VENV)/bin/ruff check meterhub drivers webui tests

clean-instance:
	rm -rf instance
