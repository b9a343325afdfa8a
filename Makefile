# Every target creates .venv when missing and installs faceforge into it: a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench install clean dist dist-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# make demo DEMO_ARGS="--lfw ../shared/data/lfw" adds the real-photo row (any faceforge demo option)
demo: $(STAMP)
	$(PY) -m faceforge.cli.main demo $(DEMO_ARGS)

# Two pytest workers (one per core of the CI machine), one torch thread each (tests/conftest.py):
# 741 s vs 1480 s of pytest in one process (2-vCPU AMD EPYC; ~200 s of it the lighter ONNX parity check). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# The edit-test loop: every test but the ones marked slow (those that train a model), one torch thread.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# The release files: dist/faceforge-VERSION.tar.gz and dist/faceforge-VERSION-py3-none-any.whl.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .

# fails (naming them) when any module of the train extra is importable
export NO_TRAIN_EXTRA := import importlib.util as u, sys; \
	sys.exit(", ".join(m for m in ("lightning", "timm", "tensorboard", "matplotlib") if u.find_spec(m)) or None)

# Install the wheel into a new, empty venv (its dependencies from the package index, nothing from
# .venv) and run the CLI there, from another directory so the source tree cannot stand in for it.
dist-check: dist
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	t0=$$(date +%s); \
	"$$tmp/venv/bin/python" -m pip install -q dist/*.whl; \
	echo "dist-check: clean-venv install of the wheel took $$(( $$(date +%s) - t0 )) s"; \
	cd "$$tmp"; \
	./venv/bin/faceforge --version; \
	./venv/bin/faceforge models list > models.txt; \
	grep -q "^iresnet50 " models.txt; \
	./venv/bin/python -c "$$NO_TRAIN_EXTRA"; \
	echo "dist-check: faceforge --version and models list ran from the wheel, without the train extra"

clean:
	rm -rf $(VENV) runs data/synthfaces dist build
