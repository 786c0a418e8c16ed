"""Helpers for tests that run `axr preprocess` on small generated data.

A plain module (not conftest) so test files in any folder can import it by name:
pytest puts tests/ on sys.path (pyproject: pythonpath).
"""

from __future__ import annotations

from pathlib import Path


class PreprocessWorkspace:
    """A folder with a config file and JSONL data for `axr preprocess` tests (C2)."""

    def __init__(self, root: Path, tokenizer_dir: Path) -> None:
        self.root = root
        self.tokenizer_dir = tokenizer_dir
        self.prepared = root / "prepared"

    def write_rows(self, name: str, rows: list[dict[str, object]]) -> Path:
        import json

        path = self.root / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    def config(
        self, data: Path, *, type: str = "alpaca", top: str = "", dataset: str = "", name: str = "config.toml"
    ) -> Path:
        path = self.root / name
        path.write_text(
            f'base_model = "{self.tokenizer_dir}"\nsequence_len = 256\n'
            f'dataset_prepared_path = "{self.prepared}"\n{top}\n'
            f'[[datasets]]\npath = "{data}"\ntype = "{type}"\n{dataset}\n'
        )
        return path


def alpaca_rows(count: int) -> list[dict[str, object]]:
    return [
        {
            "instruction": f"Say the number {index}",
            "input": "" if index % 3 else f"ctx {index}",
            "output": f"It is {index}.",
        }
        for index in range(count)
    ]
