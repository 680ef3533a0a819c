# The two entry points of a fresh machine: `make demo` and `make test`.
.PHONY: demo test lint bench venv function-images docs dist compose-config topology

venv:
	@scripts/bootstrap

demo: venv
	@scripts/system-deps --demo
	.venv/bin/airflow-dcache demo $(ARGS)

# Two workers, a test file each at a time: the end-to-end files mostly wait on Airflow and dCache, so two
# fit the 2-core machine (module-scoped stacks stay in one worker; every fixture uses free ports).
test: venv
	@scripts/system-deps
	.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

lint: venv
	.venv/bin/ruff check .
	.venv/bin/mypy airflow_dcache

bench: venv
	@scripts/system-deps
	.venv/bin/airflow-dcache bench transfer
	.venv/bin/python scripts/plot_benchmarks.py

function-images: venv
	@scripts/system-deps
	scripts/function-images

docs: venv
	.venv/bin/python scripts/plot_benchmarks.py
	.venv/bin/mkdocs build --strict

dist: venv
	.venv/bin/python -m build --outdir dist . && .venv/bin/twine check --strict dist/*

compose-config:
	docker-compose -f docker-compose.yaml config -q

# The distributed topology on this machine, loopback only: Postgres, Redis, both dCache sites, 2 schedulers,
# 2 triggerers, 2 Celery workers, the dag-processor and the API server (airflow_dcache/testing/topology.py).
# Prints the endpoints and each component's command; Ctrl-C stops everything. ARGS e.g. "--workers 3".
topology: venv
	@scripts/system-deps
	.venv/bin/airflow-dcache topology $(ARGS)
