# The two commands a hall's IT staff and developers need: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGES := hall_daemon drivers display broadcast sync

.PHONY: setup demo test test-unit test-service lint typecheck format bench soak install clean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup lint typecheck
	$(PY) -m pytest -m unit -q
	$(PY) -m pytest -m service -q

test-unit: setup
	$(PY) -m pytest -m unit -q

test-service: setup
	$(PY) -m pytest -m service -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) bench/engine_bench.py
	$(PY) bench/store_bench.py
	$(PY) bench/recovery_bench.py
	$(PY) bench/voice_bench.py
	$(PY) bench/display_bench.py
	$(PY) bench/sync_bench.py
	$(PY) bench/serial_bench.py
	$(PY) bench/keypad_mqtt_bench.py

# The long fault and soak run (a compressed hall day, 50 kill -9s, broker and port faults).
soak: setup
	nice -n 10 $(PY) bench/soak.py

# On a hall PC, as root: venv under /opt/hall-daemon, config /etc/hall-daemon, the unit.
install:
	scripts/install.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .import_linter_cache .pytest_cache .hypothesis .demo
