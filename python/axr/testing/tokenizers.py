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


def _byte_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: every byte as a printable character.

    Printable Latin-1 bytes stand for themselves; the others (controls, space,
    ...) are shifted to code points from 256 up, in byte order. This is the
    table GPT-2-style tokenizer.json files use, so token strings round-trip.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


def _tekken_special_tokens(count: int) -> list[str]:
    """Names of tekken's control tokens (ids 0..count-1); unnamed ones are ``<SPECIAL_i>``."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    named = {int(info["rank"]): str(info["token_str"]) for info in Tekkenizer.DEPRECATED_SPECIAL_TOKENS}
    return [named.get(index, Tekkenizer.SPECIAL_TOKEN_TEMPLATE.format(id=index)) for index in range(count)]


def build_tekken_tokenizer(out_dir: str | Path, *, tekken_file: str = "tekken_240911.json") -> Path:
    """Write a byte-level BPE ``tokenizer.json`` (+ config) for Mistral's tekken tokenizer into ``out_dir``.

    tekken files are tiktoken-style: base64 token bytes listed by merge rank, a
    pre-tokenizer regex, and ``num_special_tokens`` control tokens in front, so
    token id = rank + num_special_tokens. The Hugging Face equivalent is a BPE
    over the byte-level alphabet whose merges are ordered by the rank of the
    token they make, with the regex split first and whole-word lookup before
    merging (``ignore_merges``, as tiktoken does). Ids are checked against
    mistral-common's own Tekkenizer in tests.

    Returns ``out_dir``. Idempotent: an existing complete folder is reused.
    """
    import base64

    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    out = Path(out_dir)
    if (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)

    data = json.loads((mistral_common_data_dir() / tekken_file).read_text(encoding="utf-8"))
    config = data["config"]
    special_count = int(config["default_num_special_tokens"])
    kept = int(config["default_vocab_size"]) - special_count
    ranks: dict[bytes, int] = {}
    for entry in data["vocab"][:kept]:
        ranks[base64.b64decode(entry["token_bytes"])] = int(entry["rank"])

    alphabet = _byte_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    specials = _tekken_special_tokens(special_count)
    vocab = {name: index for index, name in enumerate(specials)}
    ranked_merges: list[tuple[int, int, int, str, str]] = []
    for token, rank in ranks.items():
        vocab[as_text(token)] = rank + special_count
        # Every split of a token into two known tokens is a merge that makes it;
        # tiktoken merges the pair whose result has the lowest rank first.
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                ranked_merges.append((rank, ranks[left], ranks[right], as_text(left), as_text(right)))
    ranked_merges.sort()
    merges = [(left, right) for _, _, _, left, right in ranked_merges]

    bos, eos, unk = "<s>", "</s>", "<unk>"
    tokenizer = Tokenizer(models.BPE(vocab, merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(config["pattern"]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])]
    )
    tokenizer.add_special_tokens([AddedToken(name, normalized=False, special=True) for name in specials])
    tokenizer.save(str(out / "tokenizer.json"))

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": bos, "eos_token": eos, "unk_token": unk}, indent=2) + "\n"
    )
    return out
