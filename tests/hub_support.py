"""Repo ids the loopback hub of tests/hub serves (a plain module so test files can import it by name)."""

MODEL_ID = "axr-test/tiny-llama"
DATASET_ID = "axr-test/alpaca-mini"
SUBSETS_ID = "axr-test/alpaca-folders"
