# dmds: `make run` starts the whole service, `make test` runs every check. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= dmds-data
PORT ?= 7000
WS_PORT ?= 5000

.PHONY: run test install lint typecheck pytest system-deps web bench chaos cluster clean

# The web client, built from web/ with the npm registry's packages at the lock file's versions.
WEB_BUILT := src/dmds/web/static/index.html
$(WEB_BUILT): web/package-lock.json web/build.mjs $(wildcard web/src/*)
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

web: $(WEB_BUILT)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The SOAP normaliser in the background, the server in the foreground; Ctrl-C (or the server
# stopping for any reason) stops both.
run: $(STAMP) $(WEB_BUILT)
	@$(BIN)/dmds ws --host 127.0.0.1 --port $(WS_PORT) & ws=$$!; \
	trap 'kill $$ws 2>/dev/null; wait $$ws 2>/dev/null' EXIT INT TERM; \
	$(BIN)/dmds serve --port $(PORT) --data-dir $(DATA_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

# The desktop client's tests run Qt offscreen, which needs a few system libraries (EGL, GL,
# xkbcommon, fontconfig, freetype, D-Bus, GLib, X11) and a font. `system-deps` asks Qt whether it
# starts; only if it does not (or no font is found), and only as root with apt-get, it installs the
# Debian packages below. Otherwise it says what is missing and the GUI tests will fail. Quick and
# idempotent: one Qt start-up when everything is there.
QT_DEBS := libegl1 libgl1 libxkbcommon0 libfontconfig1 libfreetype6 libdbus-1-3 libglib2.0-0 libx11-6 \
	fontconfig fonts-dejavu-core
QT_PROBE ?= QT_QPA_PLATFORM=offscreen $(BIN)/python -c \
	'from PySide6.QtWidgets import QApplication; QApplication([])' >/dev/null 2>&1 \
	&& fc-list 2>/dev/null | grep -q .

# Programs the tests start themselves, each installed from Debian (as root with apt-get) only when
# missing: Mosquitto and NATS (the brokers dmds is compared with), PostgreSQL (the store of several
# nodes: the tests run a throw-away server as the `postgres` user) and HAProxy (the load balancer of
# docs/deploy.md, tested). A package's own service, if the machine starts it, is not used.
# $(call need,PROGRAM,PACKAGES): the shell lines of one such check.
define need
	@if ls $(1) >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "system-deps: $(1) is missing: installing $(2)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(2) >/dev/null; \
	else \
		echo "system-deps: $(1) is missing; as root, install: $(2)" >&2; \
	fi
endef

system-deps: $(STAMP)
	@if $(QT_PROBE); then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "system-deps: Qt cannot start offscreen (or no font): installing $(QT_DEBS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(QT_DEBS) >/dev/null; \
	else \
		echo "system-deps: Qt cannot start offscreen (or no font); as root, install:" \
			"$(QT_DEBS)" >&2; \
	fi
	$(call need,/usr/sbin/mosquitto,mosquitto)
	$(call need,/usr/sbin/nats-server,nats-server)
	$(call need,/usr/lib/postgresql/*/bin/initdb,postgresql)
	$(call need,/usr/sbin/haproxy,haproxy)
	$(call need,/usr/bin/chromium,chromium)

pytest: $(STAMP) system-deps $(WEB_BUILT)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# Every benchmark of docs/benchmarks.md, three runs each, side by side with the trivial server,
# Mosquitto and NATS JetStream; JSON, report.md and report.png land in $(BENCH_OUT). Takes about 10
# minutes; run it on a quiet machine. Not part of `make test`: benchmarks are never assertions.
BENCH_OUT ?= bench-results
bench: $(STAMP) system-deps
	mkdir -p $(BENCH_OUT)
	$(BIN)/dmds bench register --runs 3 --json $(BENCH_OUT)/register.json
	$(BIN)/dmds bench send --protocol classic --pairs 8 --messages 1000 --runs 3 \
		--json $(BENCH_OUT)/send-classic.json
	$(BIN)/dmds bench send --protocol session --messages 20000 --runs 3 --relay --mqtt --nats \
		--json $(BENCH_OUT)/send-session.json
	$(BIN)/dmds bench queue --protocol classic --messages 10000 --runs 3 --json $(BENCH_OUT)/queue-classic.json
	$(BIN)/dmds bench queue --protocol session --messages 10000 --runs 3 --relay --mqtt --nats \
		--json $(BENCH_OUT)/queue-session.json
	$(BIN)/dmds bench connections --count 15000 --runs 3 --json $(BENCH_OUT)/connections.json
	$(BIN)/dmds bench report $(BENCH_OUT)/*.json --out $(BENCH_OUT)

# Three nodes on a throw-away PostgreSQL (started here, removed at exit), the SOAP normaliser,
# and how to point clients at them; Ctrl-C stops everything. NODES=... BASE_PORT=...
NODES ?= 3
BASE_PORT ?= 7100
cluster: $(STAMP) system-deps
	$(BIN)/dmds cluster --nodes $(NODES) --base-port $(BASE_PORT)

# The long reliability proof of docs/reliability.md (kill loop, atheris fuzzing, flood).
chaos: $(STAMP) system-deps
	$(BIN)/dmds bench chaos --json $(BENCH_OUT)/chaos.json

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache src/dmds/web/static web/node_modules
