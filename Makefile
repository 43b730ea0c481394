# The two commands of the README: `make run` and `make test`. Both install what they need first.
.PHONY: setup run test lint

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python -m scripts.stack

lint: setup
	.venv/bin/ruff check .

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q -p no:cacheprovider -rs --durations=20
