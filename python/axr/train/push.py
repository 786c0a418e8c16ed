"""Pushing training results to the hub: ``hub_model_id`` + ``hub_strategy``, as transformers' Trainer does.

- ``end``: the final adapter/model, tokenizer and config, once training ends.
- ``every_save`` (the default): those files at every checkpoint save too.
- ``checkpoint``: as ``every_save``, and the newest whole checkpoint as ``last-checkpoint/`` (to resume).
- ``all_checkpoints``: as ``every_save``, and every checkpoint under its own folder name.

The repo is created private (``exist_ok``: an existing repo keeps its visibility) before the first
step, so a wrong id or a missing token fails before any training time is spent. Uploads are
synchronous on the main process; the token comes from ``HF_TOKEN`` or ``hf auth login``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from axr.errors import ConfigError

STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
# What a pushed model folder holds: weights, configs and tokenizer files, never optimizer state nor the
# checkpoint folders under output_dir (these patterns match top-level names only).
MODEL_PATTERNS = [
    "adapter_model.safetensors",
    "adapter_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.*",
    "merges.txt",
    "README.md",
    "axr_config.json",
]


class HubPush:
    """Uploads for one run; ``None`` from ``for_config`` when ``hub_model_id`` is unset."""

    def __init__(self, repo_id: str, strategy: str, *, main_process: bool) -> None:
        self.repo_id = repo_id
        self.strategy = strategy
        self.main_process = main_process
        self._api: Any = None

    @classmethod
    def for_config(cls, cfg: Any, *, main_process: bool) -> HubPush | None:
        if not cfg.hub_model_id:
            if cfg.hub_strategy:
                raise ConfigError("hub_strategy: set hub_model_id too (the repo to push to)")
            return None
        strategy = cfg.hub_strategy or "every_save"
        if strategy not in STRATEGIES:
            raise ConfigError(f"hub_strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
        push = cls(cfg.hub_model_id, strategy, main_process=main_process)
        push.create_repo()
        return push

    def _call(self, what: str, function: Any, **kwargs: Any) -> Any:
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        from axr.hub import offline

        if offline():
            raise ConfigError(
                f"hub_model_id: cannot push to {self.repo_id!r}, the hub is offline (HF_HUB_OFFLINE)"
            )
        try:
            return function(repo_id=self.repo_id, **kwargs)
        except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as error:
            raise ConfigError(f"hub_model_id: {what} {self.repo_id!r} failed: {error}") from None

    def create_repo(self) -> None:
        if not self.main_process:
            return
        from huggingface_hub import HfApi

        self._api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
        self._call("creating", self._api.create_repo, private=True, exist_ok=True)

    def _upload(
        self, folder: Path, path_in_repo: str | None, message: str, patterns: list[str] | None
    ) -> None:
        self._call(
            "pushing to",
            self._api.upload_folder,
            folder_path=str(folder),
            path_in_repo=path_in_repo,
            commit_message=message,
            allow_patterns=patterns,
        )

    def saved_checkpoint(self, checkpoint: Path, step: int) -> None:
        """After ``checkpoint-<step>`` was written (and verified)."""
        if not self.main_process or self.strategy == "end":
            return
        self._upload(checkpoint, None, f"Training in progress, step {step}", MODEL_PATTERNS)
        if self.strategy == "checkpoint":
            self._upload(checkpoint, "last-checkpoint", f"Checkpoint at step {step}", None)
        elif self.strategy == "all_checkpoints":
            self._upload(checkpoint, checkpoint.name, f"Checkpoint at step {step}", None)

    def finished(self, output_dir: Path, step: int) -> None:
        """After the final model was saved in ``output_dir`` (its checkpoints are not pushed again)."""
        if self.main_process:
            self._upload(output_dir, None, f"End of training, step {step}", MODEL_PATTERNS)
