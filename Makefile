# annotate: two commands on a fresh machine.
#   make run   - install, migrate, seed a demo project, serve on http://127.0.0.1:8000 with a real worker
#   make test  - the whole test suite (real PostgreSQL/Redis when reachable, else SQLite; says what it skipped)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# PyTorch on this glibc spends half its time in the kernel without these (see docs/ml.md).
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 100000000000

.PHONY: run test install install-dev lint format migrate demo bench-queue bench-load bench-al bench-consensus clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	# Animal-MNIST's metadata pulls TensorFlow; its images are all the demo needs.
	$(PIP) install -q --no-deps animal-mnist==0.4
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py seed_demo

run: demo
	$(PY) manage.py rundev --addr 127.0.0.1:8000

test: install-dev
	$(PY) -m tests.runner $(ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy mltasks/core
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench-queue: install-dev
	$(PY) bench/queue_bench.py

bench-load: install-dev
	$(PY) bench/load.py $(ARGS)

bench-al: install-dev
	$(PY) bench/active_learning.py

bench-consensus: install-dev
	$(PY) bench/consensus.py

clean:
	rm -rf var
