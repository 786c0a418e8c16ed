"""Offline fixtures for tests and the demo: real tokenizers and tiny random models.

No hub access is needed: tokenizers are built from models that PyPI packages
ship (``mistral-common``), and models are random-initialised from a config.
"""

from axr.testing.datasets import InMemoryDataset
from axr.testing.models import build_tiny_llama
from axr.testing.tokenizers import build_mistral_tokenizer, build_tekken_tokenizer, mistral_common_data_dir

__all__ = [
    "InMemoryDataset",
    "build_mistral_tokenizer",
    "build_tekken_tokenizer",
    "build_tiny_llama",
    "mistral_common_data_dir",
]
