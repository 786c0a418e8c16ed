"""A loopback hub for these tests: ``HF_ENDPOINT`` points at it, ``HF_HOME`` is a fresh folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from axr.testing.hub_server import HubServer, alpaca_dataset_repo, files_of_folder, folder_subsets_repo
from hub_support import DATASET_ID, MODEL_ID, SUBSETS_ID


@pytest.fixture(scope="session")
def tiny_model_files(tiny_llama_dir: Path) -> dict[str, bytes]:
    files = files_of_folder(tiny_llama_dir)
    # A pickle next to the safetensors weights: axr must never fetch it.
    files["pytorch_model.bin"] = b"not to be downloaded"
    files["README.md"] = b"# tiny llama for tests\n"
    return files


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub read HF_HUB_OFFLINE when it was imported (the test runner may export it); axr reads
    # the variable at each call, and the client's own switch must agree with it.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return home


@pytest.fixture
def fake_hub(
    hf_home: Path, tiny_model_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> Iterator[HubServer]:
    """The hub, with the tiny model and two dataset repos; stopped at teardown (and after 300 s at most)."""
    with HubServer(max_requests=3000, lifetime_s=300) as hub:
        hub.add_repo("model", MODEL_ID, tiny_model_files)
        hub.add_repo("dataset", DATASET_ID, alpaca_dataset_repo())
        hub.add_repo("dataset", SUBSETS_ID, folder_subsets_repo(counts={"en": 5, "fr": 7}))
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub
