# The two entry points of a fresh machine: `make demo` and `make test`.
.PHONY: demo test lint bench venv function-images docs dist compose-config

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
