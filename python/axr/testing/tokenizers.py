"""Build Hugging Face ``tokenizer.json`` folders from tokenizer models shipped by PyPI packages.

``mistral-common`` ships Mistral-7B's SentencePiece model (``tokenizer.model.v1``,
32k pieces, byte fallback). Converting it with the ``tokenizers`` library gives
the same ids as SentencePiece itself; the layout mirrors the Llama/Mistral
"legacy" tokenizer.json published for those models.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from axr.errors import ConfigError


def mistral_common_data_dir() -> Path:
    """The ``data/`` folder of the installed ``mistral-common`` package."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the mistral-common package is not installed; it ships the tokenizer models the "
            "tests and demo use: pip install mistral-common"
        )
    return Path(spec.origin).parent / "data"


def build_mistral_tokenizer(out_dir: str | Path, *, model_file: str = "tokenizer.model.v1") -> Path:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` for Mistral-7B's tokenizer into ``out_dir``.

    Returns ``out_dir``. Idempotent: an existing complete folder is reused.
    """
    import sentencepiece
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers.tokenization_utils_base import generate_merges

    out = Path(out_dir)
    if (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)

    processor = sentencepiece.SentencePieceProcessor(model_file=str(mistral_common_data_dir() / model_file))
    pieces = [processor.id_to_piece(index) for index in range(processor.get_piece_size())]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    scores = {piece: processor.get_score(index) for index, piece in enumerate(pieces)}
    merges = generate_merges(vocab, scores)

    unk, bos, eos = pieces[processor.unk_id()], pieces[processor.bos_id()], pieces[processor.eos_id()]
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])]
    )
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(
        [AddedToken(token, normalized=False, special=True) for token in (unk, bos, eos)]
    )
    tokenizer.save(str(out / "tokenizer.json"))

    config = {
        # With LlamaTokenizer here, transformers 5 rebuilds the tokenizer on load and its ids
        # differ for text that starts with whitespace; the fast wrapper loads tokenizer.json as is.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": bos, "eos_token": eos, "unk_token": unk}, indent=2) + "\n"
    )
    return out
