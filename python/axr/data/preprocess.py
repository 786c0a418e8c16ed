"""Config → ``PreprocessOptions`` JSON → the native pipeline, with a progress bar.

The options JSON is the one schema shared with Rust (``rust/axr-core/src/options.rs``,
unknown keys rejected on both sides) and is written into every store's ``meta.json``.
``prepared_store_for(cfg)`` finds the stores a config leads to without building them,
which is how ``axr train`` reads what ``axr preprocess`` wrote.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axr.errors import ConfigError
from axr.hub import dataset_files, is_hub_id, model_source
from axr.remote import fetch, scheme_of

DEFAULT_PREPARED_DIR = "last_run_prepared"

# Keys of a `datasets` entry that say where rows come from; every other key set is a format key.
_SOURCE_KEYS = {"path", "ds_type", "data_files", "split", "train_on_split", "shards", "shards_idx"}
_SHARD_ALIASES = {"dataset_shard_num": "shards", "dataset_shard_idx": "shards_idx"}
_HUB_ONLY_KEYS = ("name", "revision", "trust_remote_code")  # read above, never format keys
_DEFAULT_PROPERTY_MAPPINGS = {"role": "role", "content": "content"}


@dataclass
class PreprocessResult:
    """What ``preprocess`` built or found: ``stores["train"]`` (and ``stores["eval"]``) are store dirs."""

    root: Path
    fingerprint: str
    reused: bool
    stores: dict[str, Path]
    seconds: float
    metas: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Which encoder tokenized (``path``: fast or tokenizers, ``detail``: the pipeline or why not),
    # its word-cache counters and ``verified`` texts; None when the store was reused.
    encoder: dict[str, Any] | None = None


def _entry_dict(entry: Any) -> tuple[dict[str, Any], set[str]]:
    if hasattr(entry, "model_dump"):
        return entry.model_dump(), set(entry.model_fields_set)
    data = dict(entry)
    return data, set(data)


def _dataset_entries(
    entries: Any, list_key: str, *, train_on_inputs: bool, for_eval: bool, cfg: Any
) -> list[dict[str, Any]]:
    """The native dataset options of a config list; an entry whose ``name`` lists several subsets of a
    hub dataset becomes one dataset per subset, in the listed order (as Axolotl loads them)."""
    options = []
    for index, entry in enumerate(entries or []):
        key = f"{list_key}[{index}]"
        subsets = _entry_dict(entry)[0].get("name")
        if isinstance(subsets, list):
            if not subsets:
                raise ConfigError(f"{key}.name: an empty list names no subset; remove it or name one")
            for subset in subsets:
                options.append(
                    _dataset_options(
                        entry,
                        key,
                        train_on_inputs=train_on_inputs,
                        for_eval=for_eval,
                        cfg=cfg,
                        subset=str(subset),
                    )
                )
        else:
            options.append(
                _dataset_options(entry, key, train_on_inputs=train_on_inputs, for_eval=for_eval, cfg=cfg)
            )
    return options


def _dataset_options(
    entry: Any,
    key: str,
    *,
    train_on_inputs: bool,
    for_eval: bool,
    cfg: Any = None,
    subset: str | None = None,
) -> dict[str, Any]:
    """``subset``: one of the names when ``name`` lists several."""
    data, given = _entry_dict(entry)
    if subset is not None:
        data = {**data, "name": subset}
    subset_name = data.get("name")
    if data.get("trust_remote_code"):
        raise ConfigError(
            f"{key}.trust_remote_code: axr reads a hub dataset's data files, never a loading script; "
            "remove it (a dataset that needs a script has no data files axr can read)"
        )
    split = data.get("split") if for_eval else (data.get("train_on_split") or data.get("split"))
    files = data.get("data_files")
    data_files = [files] if isinstance(files, str) else (list(files) if files is not None else None)
    path = str(data["path"])
    origin = None
    if scheme_of(path) is not None:
        for hub_key in ("name", "revision"):
            if data.get(hub_key) is not None:
                raise ConfigError(
                    f"{key}.{hub_key}: applies to hub datasets, not to the URL {path!r}; remove it"
                )
        if data_files:
            # Named files under a remote folder: fetch just those.
            if any(any(char in name for char in "*?[") for name in data_files):
                raise ConfigError(
                    f"{key}.data_files: globs under a remote path are not supported; name the files"
                )
            fetched = [fetch(f"{path.rstrip('/')}/{name}", f"{key}.data_files") for name in data_files]
            path, data_files = str(fetched[0].path.parent), [str(item.path) for item in fetched]
            origin = "\n".join(item.origin for item in fetched)
        else:
            remote = fetch(path, f"{key}.path")
            path, origin = str(remote.path), remote.origin
    elif is_hub_id(path):
        # The rows still go through the native reader: it reads the cached snapshot's files. The
        # commit sha is fingerprinted (with the files' bytes), so a new revision builds a new store.
        hub = dataset_files(
            path, key, name=subset_name, split=split, data_files=data_files, revision=data.get("revision")
        )
        origin = f"hub dataset {path} at {hub.sha}" + (f" subset {subset_name}" if subset_name else "")
        path, data_files, split = str(hub.folder), hub.data_files, hub.split
    else:
        for hub_key in ("name", "revision"):
            if data.get(hub_key) is not None:
                raise ConfigError(
                    f"{key}.{hub_key}: applies to hub datasets, and {path!r} is a local path; remove it"
                )
    source: dict[str, Any] = {"path": path, "key": key}
    if origin is not None:
        source["origin"] = origin
    if data.get("ds_type") is not None:
        source["ds_type"] = data["ds_type"]
    if data_files is not None:
        source["data_files"] = data_files
    if split is not None:
        source["split"] = split
    for config_key in ("shards", "shards_idx", *_SHARD_ALIASES):
        if data.get(config_key) is not None:
            source[_SHARD_ALIASES.get(config_key, config_key)] = data[config_key]

    format_keys: dict[str, Any] = {}
    for name in sorted(given):
        value = data.get(name)
        if name in _SOURCE_KEYS or name in _SHARD_ALIASES or name in _HUB_ONLY_KEYS or value is None:
            continue
        if name == "message_property_mappings" and value == _DEFAULT_PROPERTY_MAPPINGS:
            continue  # filled in by the schema for every entry; only a real mapping is a format key
        if name == "type" and isinstance(value, dict):
            # A custom format given as a table: its keys are the format keys, the type stays unset.
            format_keys.update({k: v for k, v in value.items() if v is not None})
            continue
        format_keys[name] = value
    format_keys.setdefault("train_on_inputs", train_on_inputs)
    if cfg is not None and cfg.chat_template_limits is not None:
        # Only when set, so that a config without it keeps its store's fingerprint.
        format_keys["template_limits"] = cfg.chat_template_limits.model_dump()
    if cfg is not None and _is_conversation(format_keys.get("type")):
        # Top-level conversation settings apply to every conversation dataset that sets none.
        for top_key in ("eot_tokens", "default_system_message"):
            if getattr(cfg, top_key) is not None:
                format_keys.setdefault(top_key, getattr(cfg, top_key))
    return {"source": source, "format": format_keys}


def _is_conversation(dataset_type: Any) -> bool:
    return isinstance(dataset_type, str) and dataset_type.split(".", 1)[0] in ("chat_template", "sharegpt")


def tokenizer_dir_for(cfg: Any) -> Path:
    """The local folder with ``tokenizer.json``: ``tokenizer_config`` if set, else ``base_model``
    (a hub id's cached snapshot, a GGUF file's converted folder)."""
    key = "tokenizer_config" if cfg.tokenizer_config else "base_model"
    name = getattr(cfg, key)
    path = Path(model_source(cfg, key))
    if (path / "tokenizer.json").is_file():
        return path
    if path.is_dir():
        raise ConfigError(
            f"{key}: {path} has no tokenizer.json (axr tokenizes with the fast tokenizer's file)"
        )
    raise ConfigError(f"{key}: {name!r} is neither a local folder nor a hub id (org/name)")


def _pretraining_entries(cfg: Any) -> list[dict[str, Any]]:
    """``pretraining_dataset`` as ``datasets`` entries: completion data read from
    ``text_column``. The native pipeline streams every dataset in bounded memory, so a pre-training
    corpus goes into the same prepared store as any other, its long documents split into chunks."""
    value = cfg.pretraining_dataset
    if isinstance(value, str):
        value = [{"path": value}]
    entries = []
    for index, entry in enumerate(value):
        key = f"pretraining_dataset[{index}]"
        data, given = _entry_dict(entry)
        kind = data.get("type")
        if kind not in (None, "pretrain", "completion"):
            raise ConfigError(
                f"{key}.type: {kind!r} is not supported yet in pretraining_dataset (pretrain or completion "
                "text only); put instruction or chat data under datasets"
            )
        if data.get("field") is not None and data.get("text_column") is not None:
            raise ConfigError(f"{key}: field and text_column are both set; text_column names the text column")
        column = data.get("text_column") or data.get("field") or "text"
        converted = {name: data[name] for name in given if name not in ("type", "text_column", "field")}
        converted.update(type="completion", field=column)
        entries.append(converted)
    return entries


def options_from_config(cfg: Any) -> dict[str, Any]:
    """The ``PreprocessOptions`` a config describes (a JSON-ready dict)."""
    if cfg.pretraining_dataset:
        train_list, train_key = _pretraining_entries(cfg), "pretraining_dataset"
    else:
        train_list, train_key = list(cfg.datasets or []), "datasets"
    if not train_list:
        raise ConfigError("datasets: at least one dataset is needed to preprocess")
    train_on_inputs = bool(cfg.train_on_inputs)
    special = cfg.special_tokens
    special_tokens: dict[str, str] = {}
    if special is not None:
        values = special.model_dump() if hasattr(special, "model_dump") else dict(special)
        for role, value in values.items():
            if value is None:
                continue
            if isinstance(value, list):
                raise ConfigError(
                    f"special_tokens.{role}: lists are not supported by preprocess yet; use `tokens`"
                )
            special_tokens[role] = value
    options: dict[str, Any] = {
        "datasets": _dataset_entries(
            train_list, train_key, train_on_inputs=train_on_inputs, for_eval=False, cfg=cfg
        ),
        "test_datasets": _dataset_entries(
            cfg.test_datasets, "test_datasets", train_on_inputs=train_on_inputs, for_eval=True, cfg=cfg
        ),
        "tokenizer_dir": str(tokenizer_dir_for(cfg)),
        "special_tokens": special_tokens,
        "tokens": list(cfg.tokens or []),
        "sequence_len": int(cfg.sequence_len),
        "excess_length_strategy": cfg.excess_length_strategy,
        "on_bad_row": cfg.on_bad_row,
        "shuffle_merged_datasets": bool(cfg.shuffle_merged_datasets),
        "val_set_size": float(cfg.val_set_size),
        # seed = 0 is a seed like any other (training uses it as given).
        "seed": int(cfg.seed),
        "dataset_shard_num": cfg.dataset_shard_num,
        "dataset_shard_idx": cfg.dataset_shard_idx,
        "prepared_dir": str(cfg.dataset_prepared_path or DEFAULT_PREPARED_DIR),
        "num_threads": cfg.dataset_num_proc,
        "special_tokens_in_text": cfg.special_tokens_in_text,
    }
    # Axolotl's top-level chat template becomes the tokenizer's own for this run: conversation
    # datasets that name none use it, and it is saved with the tokenizer for inference.
    if cfg.chat_template is not None:
        options["chat_template"] = cfg.chat_template
        if cfg.chat_template_jinja is not None:
            options["chat_template_jinja"] = cfg.chat_template_jinja
    return options


def prepared_store_for(cfg: Any) -> Path:
    """The prepared root (``<dataset_prepared_path>/<fingerprint>``) of a config, built or not.

    Its ``train`` (and ``eval``) subfolders are the stores once ``preprocess(cfg)`` ran. Computing
    it hashes the input files, so it takes about as long as reading them once.
    """
    from axr._native import locate_prepared

    return Path(locate_prepared(json.dumps(options_from_config(cfg))))


ProgressCallback = Callable[[str, int, int, int, int], None]

# Dataset keys only preference datasets read (axr.train.preference).
PREFERENCE_KEYS = (
    "field_chosen",
    "field_rejected",
    "field_prompt",
    "prompt_format",
    "chosen_format",
    "rejected_format",
    "field_completion",
    "field_label",
    "completion_format",
)


def _check_not_preference(cfg: Any) -> None:
    """Without ``rl``, a preference dataset key would be silently ignored by the SFT formats."""
    for where in ("datasets", "test_datasets"):
        for index, entry in enumerate(getattr(cfg, where, None) or []):
            table = getattr(entry, "type", None)
            for key in PREFERENCE_KEYS:
                for holder, prefix in ((entry, ""), (table, "type.")):
                    if not isinstance(holder, str) and getattr(holder, key, None) is not None:
                        raise ConfigError(
                            f"{where}[{index}].{prefix}{key}: read by preference datasets only (set rl)"
                        )


@dataclass
class PartResult:
    """What ``preprocess_shard`` built or found: one part of a sharded run (``--shard I/N``)."""

    dir: Path
    index: int
    count: int
    reused: bool
    bytes: int
    seconds: float
    train: dict[str, Any]
    eval: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


def _run_native(
    function: Callable[..., str],
    *args: Any,
    progress: bool | None,
    callback: ProgressCallback | None,
) -> dict[str, Any]:
    show = sys.stderr.isatty() if progress is None else progress
    if callback is None and show:
        with _ProgressBar() as bar:
            report: dict[str, Any] = json.loads(function(*args, progress=bar.update))
    else:
        report = json.loads(function(*args, progress=callback))
    for warning in report["warnings"]:
        print(f"axr: warning: {warning}", file=sys.stderr)
    return report


def preprocess_shard(
    cfg: Any,
    index: int,
    count: int,
    *,
    progress: bool | None = None,
    callback: ProgressCallback | None = None,
    verify_encoder: int = 0,
    doctor: bool = True,
) -> PartResult:
    """Build part ``index`` (0-based) of ``count`` of a sharded run: the samples of its share of the
    input bytes, under ``<dataset_prepared_path>/parts/``. ``preprocess(cfg, merge=True)`` joins
    the parts once all exist (docs/preprocess.md, "Sharded preprocessing")."""
    from axr._native import preprocess_part

    if cfg.rl is not None:
        raise ConfigError("--shard: sharded preprocessing is not supported yet with rl (preference data)")
    _check_not_preference(cfg)
    options = options_from_config(cfg)
    options["verify_encoder"] = int(verify_encoder)
    options["doctor"] = doctor
    options_json = json.dumps(options)
    report = _run_native(preprocess_part, options_json, index, count, progress=progress, callback=callback)
    return PartResult(
        dir=Path(report["dir"]),
        index=report["index"],
        count=report["count"],
        reused=report["reused"],
        bytes=report["bytes"],
        seconds=report["seconds"],
        train=report["train"],
        eval=report["eval"],
        warnings=list(report["warnings"]),
    )


def preprocess(
    cfg: Any,
    *,
    progress: bool | None = None,
    callback: ProgressCallback | None = None,
    merge: bool = False,
    verify_encoder: int = 0,
    doctor: bool = True,
    keep_parts: bool = False,
) -> PreprocessResult:
    """Build the prepared stores of ``cfg`` (or reuse identical ones) and return where they are.

    ``progress``: show a progress bar on stderr (default: when stderr is a terminal). ``callback``
    receives ``(stage, done, total, rows, tokens)`` about every chunk instead. ``merge``: join the
    parts built by ``preprocess_shard`` instead (an error names a missing part); without it, a
    complete set of parts of exactly these inputs is joined too, rather than built again.
    ``verify_encoder``: encode the first N texts with both the fast encoder and ``tokenizers`` and
    fail on any difference (the store is rebuilt, never reused). ``doctor``: run the data doctor over
    every row while tokenizing (its findings land in each store's meta.json; a merge joins the
    parts' findings, which then must have been built with it too). ``keep_parts``: keep the parts
    after a merge (by default the merged store replaces them and they are deleted).
    """
    from axr._native import merge_parts
    from axr._native import preprocess as native_preprocess
    from axr.data._format import read_meta

    if cfg.rl is not None:
        for flag, value in (("--merge", merge), ("--verify-encoder", verify_encoder)):
            if value:
                raise ConfigError(f"{flag}: not supported yet with rl (preference data)")
        from axr.data.preference_store import preprocess_preference

        return preprocess_preference(cfg)
    _check_not_preference(cfg)
    if merge and verify_encoder:
        raise ConfigError("--verify-encoder: a merge encodes nothing; give it to the --shard runs")
    options = options_from_config(cfg)
    options["verify_encoder"] = int(verify_encoder)
    options["doctor"] = doctor
    options["keep_parts"] = keep_parts
    options_json = json.dumps(options)
    repo = cfg.push_dataset_to_hub
    if repo:
        from axr._native import locate_prepared
        from axr.data.hub_store import pull

        if pull(repo, Path(locate_prepared(options_json))):
            print(f"axr: prepared dataset downloaded from the hub dataset {repo}", file=sys.stderr)
    function = merge_parts if merge else native_preprocess
    report = _run_native(function, options_json, progress=progress, callback=callback)
    stores = {split: Path(path) for split, path in report["stores"].items()}
    if repo:
        from axr.data.hub_store import push

        if push(repo, Path(report["root"])):
            print(f"axr: prepared dataset pushed to the hub dataset {repo}", file=sys.stderr)
    return PreprocessResult(
        root=Path(report["root"]),
        fingerprint=report["fingerprint"],
        reused=report["reused"],
        stores=stores,
        seconds=report["seconds"],
        metas={split: read_meta(path) for split, path in stores.items()},
        warnings=list(report["warnings"]),
        encoder=report.get("encoder"),
    )


class _ProgressBar:
    """A rich progress bar: bytes read of total, rows/s, tokens/s, ETA; one task per stage."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description:<15}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, stage: str, done: int, total: int, rows: int, tokens: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=max(total, 1), rate="")
            self._started[stage] = time.monotonic()
        elapsed = max(time.monotonic() - self._started[stage], 1e-9)
        if stage.startswith("tokenize"):
            rate = (
                f"{rows / elapsed:,.0f} rows/s  {tokens / elapsed:,.0f} tok/s  "
                f"{done / 2**20:,.0f}/{total / 2**20:,.0f} MiB"
            )
        elif stage == "hash":
            rate = f"{done / 2**20 / elapsed:,.0f} MiB/s"
        else:
            rate = f"{done:,}/{total:,} samples"
        self._progress.update(self._tasks[stage], completed=done, total=max(total, 1), rate=rate)
