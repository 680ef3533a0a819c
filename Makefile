# The two entry points of a fresh machine: `make demo` and `make test`.
.PHONY: demo test lint bench venv function-images

venv:
	@scripts/bootstrap

demo: venv
	.venv/bin/airflow-dcache demo

test: venv
	@scripts/system-deps
	.venv/bin/python -m pytest -q -p no:cacheprovider

lint: venv
	.venv/bin/ruff check .
	.venv/bin/mypy airflow_dcache

bench: venv
	@scripts/system-deps
	.venv/bin/airflow-dcache bench transfer

function-images: venv
	@scripts/system-deps
	scripts/function-images
