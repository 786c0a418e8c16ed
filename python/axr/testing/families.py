"""Tiny random configs for every model family the packing matrix covers (tests and benches/gpu_check.py).

Each config keeps the family's distinguishing attention code on (sliding windows smaller than a
packed row, Gemma 2's logit soft-capping, Falcon's multi-query attention, GPT-NeoX's partial
rotary, MoE routers) at 2 layers and a hidden size of 64, so a forward and backward of a
40-token batch takes milliseconds on one CPU core.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axr.testing.models import TOKENIZER_FILES

SLIDING_WINDOW = 6
"""Tokens a sliding-window layer sees: smaller than the matrix's samples and packed rows, so it matters."""


@dataclass(frozen=True)
class Family:
    """One architecture: its transformers config class, tiny keyword arguments and what it has."""

    name: str
    config_class: str
    options: dict[str, Any]
    router_aux_loss: bool = False
    """A mixture of experts with a router auxiliary loss (``output_router_logits``)."""
    linear_modules: tuple[str, ...] = ()
    """Short names of the linear layers ``lora_target_linear`` adapts (every linear but the head)."""
    target_linear_refused: bool = False
    """``lora_target_linear`` is refused (PEFT would leave linear layers out); ``linear_modules`` are
    then listed in ``lora_target_modules``."""

    def config(
        self, vocab_size: int, *, bos: int | None = None, eos: int | None = None, pad: int | None = None
    ) -> Any:
        import transformers

        config_class = getattr(transformers, self.config_class)
        config = config_class(
            vocab_size=vocab_size,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
            tie_word_embeddings=False,
            **self.options,
        )
        return config


_LLAMA_LIKE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
_LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_MOE_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate", "experts")
"""PEFT's ``all-linear`` on transformers 5 MoE blocks: the router (``gate``) and the fused expert
weights (``experts``: ``gate_up_proj`` and ``down_proj`` as targeted parameters) besides attention."""

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llama", "LlamaConfig", _LLAMA_LIKE, linear_modules=_LLAMA_LINEAR),
        Family(
            "mistral",
            "MistralConfig",
            {**_LLAMA_LIKE, "sliding_window": SLIDING_WINDOW},
            linear_modules=_LLAMA_LINEAR,
        ),
        Family(
            "mixtral",
            "MixtralConfig",
            {**_LLAMA_LIKE, "num_local_experts": 4, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02},
            router_aux_loss=True,
            linear_modules=_MOE_LINEAR,
        ),
        Family("qwen2", "Qwen2Config", _LLAMA_LIKE, linear_modules=_LLAMA_LINEAR),
        Family("qwen3", "Qwen3Config", {**_LLAMA_LIKE, "head_dim": 16}, linear_modules=_LLAMA_LINEAR),
        Family(
            "qwen3_moe",
            "Qwen3MoeConfig",
            {
                **_LLAMA_LIKE,
                "head_dim": 16,
                "num_experts": 4,
                "num_experts_per_tok": 2,
                "moe_intermediate_size": 32,
                "decoder_sparse_step": 1,
                "mlp_only_layers": [],
                "router_aux_loss_coef": 0.02,
            },
            router_aux_loss=True,
            linear_modules=_MOE_LINEAR,
        ),
        Family("gemma", "GemmaConfig", {**_LLAMA_LIKE, "head_dim": 16}, linear_modules=_LLAMA_LINEAR),
        Family(
            "gemma2",
            "Gemma2Config",
            {
                **_LLAMA_LIKE,
                "head_dim": 16,
                "sliding_window": SLIDING_WINDOW,
                "attn_logit_softcapping": 50.0,
                "final_logit_softcapping": 30.0,
            },
            linear_modules=_LLAMA_LINEAR,
        ),
        Family(
            "gemma3_text",
            "Gemma3TextConfig",
            {
                **_LLAMA_LIKE,
                "head_dim": 16,
                "sliding_window": SLIDING_WINDOW,
                "layer_types": ["sliding_attention", "full_attention"],
            },
            linear_modules=_LLAMA_LINEAR,
        ),
        Family(
            "phi3",
            "Phi3Config",
            _LLAMA_LIKE,
            linear_modules=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
        ),
        Family(
            "falcon",
            "FalconConfig",
            {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 512,
            },
            linear_modules=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
        ),
        Family(
            "gpt_neox",
            "GPTNeoXConfig",
            {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 512,
            },
            linear_modules=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
        ),
        Family(
            "gptj",
            "GPTJConfig",
            {"n_embd": 64, "n_inner": 128, "n_layer": 2, "n_head": 4, "rotary_dim": 8, "n_positions": 512},
            linear_modules=("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"),
        ),
        Family(
            "mpt",
            "MptConfig",
            {"d_model": 64, "n_heads": 4, "n_layers": 2, "expansion_ratio": 2, "max_seq_len": 512},
            linear_modules=("Wqkv", "out_proj", "up_proj", "down_proj"),
        ),
        Family("olmo2", "Olmo2Config", _LLAMA_LIKE, linear_modules=_LLAMA_LINEAR),
        Family(
            "starcoder2",
            "Starcoder2Config",
            {**_LLAMA_LIKE, "sliding_window": SLIDING_WINDOW},
            linear_modules=("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"),
        ),
        Family("cohere", "CohereConfig", {**_LLAMA_LIKE, "use_qk_norm": False}, linear_modules=_LLAMA_LINEAR),
        Family(
            "deepseek_v3",
            "DeepseekV3Config",
            {
                **_LLAMA_LIKE,
                "num_key_value_heads": 4,
                "moe_intermediate_size": 32,
                "n_routed_experts": 4,
                "n_shared_experts": 1,
                "num_experts_per_tok": 2,
                "n_group": 1,
                "topk_group": 1,
                "first_k_dense_replace": 1,
                "q_lora_rank": 32,
                "kv_lora_rank": 16,
                "qk_rope_head_dim": 8,
                "qk_nope_head_dim": 8,
                "v_head_dim": 16,
            },
            linear_modules=(
                "q_a_proj",
                "q_b_proj",
                "kv_a_proj_with_mqa",
                "kv_b_proj",
                "o_proj",
            ),
            target_linear_refused=True,
        ),
        Family(
            "stablelm",
            "StableLmConfig",
            _LLAMA_LIKE,
            linear_modules=_LLAMA_LINEAR,
        ),
    )
}


def build_tiny_family(
    name: str, out_dir: str | Path, tokenizer_dir: str | Path, *, seed: int = 0, dtype: str = "float32"
) -> Path:
    """Save a random-weight tiny ``name`` model (see ``FAMILIES``) with the tokenizer of ``tokenizer_dir``.

    Loadable by ``AutoModelForCausalLM`` / ``AutoTokenizer`` like a downloaded model. Idempotent.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    config = FAMILIES[name].config(8)
    config.save_pretrained(str(out))
    for file_name in TOKENIZER_FILES:
        source = Path(tokenizer_dir) / file_name
        if source.exists():
            shutil.copyfile(source, out / file_name)
    # The tokenizer as it loads from this folder: the family's model type can change its class and
    # add tokens (Qwen2's adds <|endoftext|>), and the embeddings must cover them.
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    config = FAMILIES[name].config(
        len(tokenizer), bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(str(out), safe_serialization=True)
    return out
