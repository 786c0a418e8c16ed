"""The config schema: every key of Axolotl's "All yaml options", plus a few axr-only keys.

Attribute names are Axolotl's key names, so code reads ``cfg.sequence_len``,
``cfg.datasets[0].type``, ``cfg.micro_batch_size``. Each field's docstring is its
description (pydantic ``use_attribute_docstrings``), which ``axr validate --schema``
turns into the reference table of docs/config-reference.md.

Unknown keys are errors everywhere except in the free-form tables whose keys
belong to other libraries: ``overrides_of_model_config``, ``lr_scheduler_kwargs``,
``gradient_checkpointing_kwargs``, ``optim_args``, an inline ``deepspeed`` config.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator
from pydantic.functional_validators import AfterValidator
from pydantic_core import PydanticCustomError

from axr.config.conflicts import dataset_conflicts, top_level_conflicts


def _blank_is_none(value: Any) -> Any:
    # Axolotl's docs say "leave blank" for several keys; TOML has no null, so
    # an empty string means the same thing there.
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


Blankable = BeforeValidator(_blank_is_none)


def _reject_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1; a boolean where a number belongs is
    # a mistake worth reporting (`lora_r = true`).
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "expected a number, not true/false")
    return value


def _yaml_no(value: Any) -> Any:
    # YAML 1.1 reads a bare `no` as false; for a key whose value can be "no", that is what was meant.
    return "no" if value is False else value


# sequence_len: beyond any model's context (the longest today are around 10M tokens); a bigger
# value is a typo, caught before anything is loaded. The model's own limit is checked at load.
MAX_SEQUENCE_LEN = 1 << 24


def _sequence_len_bound(value: int) -> int:
    if value > MAX_SEQUENCE_LEN:
        raise PydanticCustomError(
            "sequence_len_too_long",
            "longer than any model's context: at most {limit} (2**24) tokens",
            {"limit": MAX_SEQUENCE_LEN},
        )
    return value


def _scalar(text: str) -> Any:
    for reader in (int, float):
        try:
            return reader(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _key_values(value: Any) -> Any:
    # Axolotl (like transformers' TrainingArguments) takes optim_args as "k=v,k2=v2".
    if not isinstance(value, str):
        return value
    pairs: dict[str, Any] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, equals, text = item.partition("=")
        if not equals or not name.strip():
            raise PydanticCustomError("key_values", "expected key=value pairs separated by commas")
        pairs[name.strip()] = _scalar(text.strip())
    return pairs


Int = Annotated[int, BeforeValidator(_reject_bool)]
Float = Annotated[float, BeforeValidator(_reject_bool)]
PositiveInt = Annotated[Int, Field(ge=1)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
Fraction = Annotated[Float, Field(ge=0, lt=1)]

_STRICT = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=False)

TrainOnEos = Literal["turn", "last", "all", "none"]


class UserDefinedFormat(BaseModel):
    """A custom instruction format: ``type`` given as a table instead of a name.

    The prompt is ``system_format`` (filled with the system text when it is not
    empty) followed by ``format`` (rows with an input) or ``no_input_format``
    (rows without one); the response is the ``field_output`` column plus EOS.
    """

    model_config = _STRICT

    system_prompt: str = ""
    """System text used when a row has no ``field_system`` column."""
    system_format: str = "{system}"
    """Wraps the system text (placeholder ``{system}``); used only when that text is not empty."""
    field_system: str = "system"
    """Row column holding a per-row system text."""
    field_instruction: str = "instruction"
    """Row column holding the instruction (required in every row)."""
    field_input: str = "input"
    """Row column holding the optional input (a missing column counts as empty)."""
    field_output: str = "output"
    """Row column holding the response (a missing column counts as empty)."""
    format: str = "{instruction} {input} "
    """Prompt for rows with a non-empty input; may use ``{instruction}`` and ``{input}``."""
    no_input_format: str = "{instruction} "
    """Prompt for rows with an empty input; may use ``{instruction}`` but not ``{input}``."""

    # With rl set, a table holding these is Axolotl's user_defined.default preference (or KTO) format.
    field_prompt: str | None = None
    """Preference data: the column with the prompt (default ``prompt``)."""
    field_chosen: str | None = None
    """Preference data: the column with the preferred answer (default ``chosen``)."""
    field_rejected: str | None = None
    """Preference data: the column with the rejected answer (default ``rejected``)."""
    prompt_format: str | None = None
    """Preference data: the prompt template (``{prompt}``, ``{system}``)."""
    chosen_format: str | None = None
    """Preference data: the preferred answer's template (``{chosen}``)."""
    rejected_format: str | None = None
    """Preference data: the rejected answer's template (``{rejected}``)."""
    field_completion: str | None = None
    """KTO data: the column with the completion (default ``completion``)."""
    field_label: str | None = None
    """KTO data: the column with the boolean label (default ``label``)."""
    completion_format: str | None = None
    """KTO data: the completion's template (``{completion}``)."""

    @model_validator(mode="after")
    def _no_input_placeholder(self) -> UserDefinedFormat:
        if "{input}" in self.no_input_format:
            raise PydanticCustomError(
                "config_conflict",
                "{message}",
                {"message": "no_input_format must not contain {input} (it is for rows without an input)"},
            )
        return self


class DatasetConfig(BaseModel):
    """One entry of ``datasets`` / ``test_datasets`` (or a list form of ``pretraining_dataset``).

    Keys apply to the dataset types that read them; the others are ignored by
    that type. Effective defaults that depend on the type are stated per key.
    """

    model_config = _STRICT

    path: str
    """Local file, glob or folder with the rows, a hub dataset id (``org/name``, fetched into the HF
    cache) or a URL (``https://``, ``s3://``, ``gs://``; fetched once into axr's cache)."""
    type: Annotated[str | UserDefinedFormat | None, Blankable] = None
    """Dataset type (``alpaca``, ``alpaca:chat``, ``sharegpt``, ``chat_template``, ``completion``,
    ``input_output``, ...), or a table for a custom format; empty for pre-tokenized rows."""
    ds_type: Literal["json", "jsonl", "arrow", "parquet", "text", "csv"] | None = None
    """File type when ``path`` is a file (json covers jsonl); inferred from the extension when empty."""
    data_files: str | list[str] | None = None
    """Data file(s) under ``path`` (a local folder or a hub dataset) to read instead of all of it."""
    shards: Annotated[Int, Field(ge=1)] | None = None
    """Split this dataset into this many shards (use with ``shards_idx``)."""
    shards_idx: Annotated[Int, Field(ge=0)] | None = None
    """Index of the shard of this dataset to use (default 0)."""
    name: str | list[str] | None = None
    """Subset of a hub dataset: a ``configs`` entry of its card, else a top-level folder of that name."""
    split: str | None = None
    """Split to load for ``test_datasets`` (default ``train``)."""
    train_on_split: str | None = None
    """Split to load for training (default ``train``)."""
    revision: str | None = None
    """Revision (branch, tag or commit) of a hub dataset."""
    trust_remote_code: bool | None = None
    """Allow a hub dataset's loading script to run (axr reads data files only: true is an error)."""

    # completion
    field: str | None = None
    """``completion``: the column with the text (default ``text``)."""
    text_column: str | None = None
    """``pretraining_dataset`` entries: the column with the text (default ``text``)."""

    # sharegpt (2024) conversations
    conversation: str | None = None
    """``sharegpt``: FastChat conversation template name (default ``vicuna_v1.1``)."""
    field_human: str | None = None
    """``sharegpt``: the ``from`` value mapped to the user role (default ``human``)."""
    field_model: str | None = None
    """``sharegpt``: the ``from`` value mapped to the assistant role (default ``gpt``)."""
    roles: dict[str, list[str]] | None = None
    """``sharegpt``: extra role names as ``{input: [...], output: [...]}``; ``chat_template``: a map
    ``{target_role: [source roles]}`` that replaces the default role map."""
    strict: bool | None = None
    """``sharegpt``: use turns as given, without normalising role/value keys (default false)."""

    # chat_template
    field_messages: str = "messages"
    """``chat_template``: the column holding the list of messages."""
    message_property_mappings: dict[str, str] | None = None
    """``chat_template``: message property → row key, e.g. ``{role = "from", content = "value"}``.
    Resolved with the legacy ``message_field_role``/``message_field_content`` into a full map
    (default ``{role = "role", content = "content"}``)."""
    message_field_role: str | None = None
    """``chat_template`` (legacy): the message key holding the role."""
    message_field_content: str | None = None
    """``chat_template`` (legacy): the message key holding the content."""
    message_field_training: str | None = None
    """``chat_template``: a per-message boolean key that overrides ``roles_to_train``."""
    message_field_training_detail: str | None = None
    """``chat_template``: a per-message key with character spans to train."""
    roles_to_train: list[str] = Field(default_factory=lambda: ["assistant"])
    """``chat_template``: roles whose content is trained (after the role map)."""
    train_on_eos: TrainOnEos = "turn"
    """``chat_template``: which end-of-turn EOS tokens are trained: ``turn`` (those of trained turns),
    ``last``, ``all`` or ``none``."""
    train_on_eot: TrainOnEos | None = None
    """``chat_template``: like ``train_on_eos`` for end-of-turn tokens; follows it when empty."""
    chat_template: str | None = None
    """``chat_template``: template name (``chatml``, ``tokenizer_default``, ``jinja``, ...); default:
    the top-level ``chat_template`` or else the tokenizer's own."""
    chat_template_jinja: str | None = None
    """``chat_template``: the Jinja template text (or a path to it) when ``chat_template = "jinja"``."""
    drop_system_message: bool = False
    """``chat_template``: drop a leading system message."""
    field_tools: str | None = None
    """``chat_template``: the column holding tool definitions (default ``tools``)."""
    field_thinking: str | None = None
    """``chat_template``: the message key holding reasoning content (default ``reasoning_content``)."""
    split_thinking: bool | None = None
    """``chat_template``: split ``<think>`` blocks out of the content into ``field_thinking``."""

    # custom instruction formats given inline (also accepted inside a `type` table)
    field_system: str | None = None
    """Custom format / ``chat_template``: the column with a per-row system text (default ``system``)."""
    field_instruction: str | None = None
    """Custom format: the instruction column (default ``instruction``)."""
    field_input: str | None = None
    """Custom format: the input column (default ``input``)."""
    field_output: str | None = None
    """Custom format: the output column (default ``output``)."""
    system_prompt: str | None = None
    """Custom format: system text when a row has none (default empty)."""
    system_format: str | None = None
    """Custom format: wraps the system text (default ``{system}``)."""
    format: str | None = None
    """Custom format: prompt for rows with an input (default ``{instruction} {input} ``)."""
    no_input_format: str | None = None
    """Custom format: prompt for rows without an input (default ``{instruction} ``)."""

    # preference datasets (rl: dpo, ipo, orpo, simpo) and KTO datasets (rl: kto)
    field_chosen: str | None = None
    """Preference data: the column with the preferred answer (default ``chosen``)."""
    field_rejected: str | None = None
    """Preference data: the column with the rejected answer (default ``rejected``)."""
    field_prompt: str | None = None
    """Preference data, ``user_defined.default``: the column with the prompt (default ``prompt``)."""
    prompt_format: str | None = None
    """Preference data, ``user_defined.default``: the prompt template (``{prompt}``, ``{system}``)."""
    chosen_format: str | None = None
    """Preference data, ``user_defined.default``: the preferred answer's template (``{chosen}``)."""
    rejected_format: str | None = None
    """Preference data, ``user_defined.default``: the rejected answer's template (``{rejected}``)."""
    field_completion: str | None = None
    """KTO data, ``user_defined.default``: the column with the completion (default ``completion``)."""
    field_label: str | None = None
    """KTO data, ``user_defined.default``: the column with the boolean label (default ``label``)."""
    completion_format: str | None = None
    """KTO data, ``user_defined.default``: the completion's template (``{completion}``)."""

    dataset_shard_num: Annotated[Int, Field(ge=1)] | None = None
    """Split this dataset into this many shards (same as ``shards``)."""
    dataset_shard_idx: Annotated[Int, Field(ge=0)] | None = None
    """Index of the shard of this dataset to use."""

    @model_validator(mode="before")
    @classmethod
    def _resolve_message_properties(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mappings = data.get("message_property_mappings")
        if mappings is not None and not isinstance(mappings, dict):
            return data  # the field's own type check reports it
        resolved: dict[str, Any] = {"role": "role", "content": "content"}
        for legacy_key, property_name in (
            ("message_field_role", "role"),
            ("message_field_content", "content"),
        ):
            if isinstance(data.get(legacy_key), str):
                resolved[property_name] = data[legacy_key]
        resolved.update(mappings or {})
        return {**data, "message_property_mappings": resolved}

    @model_validator(mode="after")
    def _check_pairs(self) -> DatasetConfig:
        problems = dataset_conflicts(self.model_dump(exclude={"message_property_mappings"}))
        if problems:
            raise PydanticCustomError("config_conflict", "{message}", {"message": "\n".join(problems)})
        return self


class SpecialTokensConfig(BaseModel):
    """Special tokens to set on (or add to) the tokenizer."""

    model_config = _STRICT

    bos_token: str | None = None
    """Beginning-of-sequence token text."""
    eos_token: str | None = None
    """End-of-sequence token text."""
    unk_token: str | None = None
    """Unknown token text."""
    pad_token: str | None = None
    """Padding token text."""
    additional_special_tokens: list[str] | None = None
    """Extra special tokens (never split, never trained as pieces)."""


class ChatTemplateLimits(BaseModel):
    """(axr) The limits of one chat-template render; each unset field keeps its default."""

    model_config = _STRICT

    instructions: PositiveInt = 20_000_000
    """Jinja instructions one render may run (a real template spends a few dozen per message)."""
    output_mib: PositiveInt = 64
    """MiB of text one render may write."""
    memory_mib: PositiveInt = 256
    """MiB of memory one render may hold at once (values built without being written out)."""


class BnbConfigKwargs(BaseModel):
    """Options of the bitsandbytes quantization config (``BitsAndBytesConfig``)."""

    model_config = _STRICT

    llm_int8_has_fp16_weight: bool = False
    """Keep fp16 main weights with 8-bit loading."""
    llm_int8_threshold: Float | None = None
    """Outlier threshold of LLM.int8()."""
    llm_int8_skip_modules: list[str] | None = None
    """Modules not to quantize."""
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type."""
    bnb_4bit_use_double_quant: bool = True
    """Quantize the quantization constants too."""
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] | None = None
    """Compute dtype of 4-bit layers (default: the training precision)."""
    bnb_4bit_quant_storage: str | None = None
    """Storage dtype of 4-bit weights (needed by FSDP + QLoRA)."""


class LoftQConfig(BaseModel):
    """LoftQ initialization of LoRA weights."""

    model_config = _STRICT

    loftq_bits: Annotated[Int, Field(ge=1)] = 4
    """Quantization bits used by LoftQ (typically 4)."""


class PeftConfig(BaseModel):
    """Extra PEFT options."""

    model_config = _STRICT

    loftq_config: LoftQConfig | None = None
    """Initialize LoRA with LoftQ."""


class FsdpConfig(BaseModel):
    """FSDP options by their FSDP2 names; FSDP1's ``fsdp_``-prefixed names are read as these."""

    model_config = _STRICT

    fsdp_version: Literal[1, 2] | None = None
    """FSDP version (``version`` is read as this)."""
    offload_params: bool | None = None
    """Offload parameters to CPU."""
    cpu_offload_pin_memory: bool | None = None
    """FSDP2 with ``offload_params``: false lets offloaded parameters swap."""
    state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT", "LOCAL_STATE_DICT"] | None = None
    """How checkpoints are gathered."""
    final_state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT", "LOCAL_STATE_DICT"] | None = None
    """How the final model is gathered."""
    transformer_layer_cls_to_wrap: str | None = None
    """Decoder layer class to wrap, e.g. ``LlamaDecoderLayer``."""
    auto_wrap_policy: Literal["TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"] | None = None
    """Auto-wrap policy."""
    min_num_params: Annotated[Int, Field(ge=0)] | None = None
    """Minimum parameters per wrapped module with ``SIZE_BASED_WRAP``."""
    sharding_strategy: str | None = None
    """FSDP1 sharding strategy (``FULL_SHARD``, ``SHARD_GRAD_OP``, ``NO_SHARD``, ``HYBRID_SHARD``)."""
    backward_prefetch: str | None = None
    """FSDP1 backward prefetch policy (``BACKWARD_PRE``, ``BACKWARD_POST``)."""
    forward_prefetch: bool | None = None
    """FSDP1: prefetch the next all-gather in forward."""
    sync_module_states: bool | None = None
    """Broadcast module states from rank 0."""
    use_orig_params: bool | None = None
    """Use original parameters (needed for mixed requires_grad, e.g. LoRA)."""
    cpu_ram_efficient_loading: bool | None = None
    """Load the model on rank 0 only."""
    activation_checkpointing: bool | None = None
    """Activation checkpointing inside FSDP."""
    limit_all_gathers: bool | None = None
    """FSDP1: rate-limit all-gathers."""
    reshard_after_forward: bool | None = None
    """FSDP2: reshard parameters after forward."""
    mixed_precision_policy: str | None = None
    """FSDP mixed-precision policy (e.g. ``bf16``)."""


Adapter = Annotated[Literal["lora", "qlora"] | None, Blankable]
Precision = Annotated[bool | Literal["auto", "full"] | None, Blankable]


class AxrConfig(BaseModel):
    """A whole axr config: Axolotl's keys plus the axr-only ones (``on_bad_row``,
    ``excess_length_strategy``, ``packing_strategy``)."""

    model_config = _STRICT

    _source_path: str | None = PrivateAttr(default=None)
    _notes: list[str] = PrivateAttr(default_factory=list)
    _ledger_only: dict[str, Any] = PrivateAttr(default_factory=dict)

    # ---- model --------------------------------------------------------------
    base_model: str
    """Model folder, hub id (fetched into the HF cache) or ``.gguf`` file holding the weights, config and
    tokenizer."""
    base_model_ignore_patterns: str | list[str] | None = None
    """File patterns not to fetch of a hub ``base_model`` (e.g. ``*.pt``)."""
    base_model_config: str | None = None
    """Folder or hub id of the model's config.json when not ``base_model``'s."""
    gguf_file: str | None = None
    """(axr) A ``.gguf`` file inside the ``base_model`` folder to use as the base model (``base_model``
    may also name the file itself); converted once into a model folder in axr's cache (``$AXR_CACHE``,
    default ``~/.cache/axr``)."""
    revision_of_model: str | None = None
    """Hub revision (branch, tag or commit) of ``base_model``."""
    tokenizer_config: str | None = None
    """A different tokenizer (folder or hub id) than ``base_model``'s."""
    model_type: str = "AutoModelForCausalLM"
    """transformers class that loads the model."""
    tokenizer_type: str = "AutoTokenizer"
    """transformers class that loads the tokenizer."""
    trust_remote_code: bool = False
    """Run code shipped with the model."""
    tokenizer_use_fast: bool = True
    """Load the fast (Rust) tokenizer."""
    tokenizer_legacy: bool | None = None
    """Llama tokenizers' ``legacy`` setting."""
    resize_token_embeddings_to_32x: bool = False
    """Round the embedding size up to a multiple of 32 after adding tokens."""
    is_falcon_derived_model: bool | None = None
    """(Internal in Axolotl) the model is Falcon-based."""
    is_llama_derived_model: bool | None = None
    """(Internal in Axolotl) the model is Llama-based."""
    is_qwen_derived_model: bool | None = None
    """(Internal in Axolotl) the model is Qwen-based."""
    is_mistral_derived_model: bool | None = None
    """(Internal in Axolotl) the model is Mistral-based (padding on the left by default)."""
    overrides_of_model_config: dict[str, Any] | None = None
    """Values set on the model's config before loading,
    e.g. ``rope_scaling = {type = "linear", factor = 2}``."""
    output_router_logits: bool | None = None
    """MoE models (Mixtral, Qwen-MoE, ...): add the router load-balancing loss,
    ``router_aux_loss_coef`` × the family's own ``load_balancing_loss_func``, to the training loss."""

    # ---- quantization and precision -----------------------------------------
    bnb_config_kwargs: BnbConfigKwargs | None = None
    """bitsandbytes quantization options for ``load_in_4bit``/``load_in_8bit``."""
    gptq: bool = False
    """The model is a 4-bit GPTQ quantized model (not supported yet: gptqmodel has no CPU wheel)."""
    load_in_8bit: bool = False
    """Load the base model in 8 bits (bitsandbytes)."""
    load_in_4bit: bool = False
    """Load the base model in 4 bits (bitsandbytes; required by ``adapter = "qlora"``)."""
    bf16: Precision = "auto"
    """bf16 mixed precision: true, false, ``full`` (also bf16 eval) or ``auto`` (bf16 where the device
    supports it, else fp16 on GPU, fp32 on CPU)."""
    fp16: bool | None = None
    """fp16 mixed precision; empty lets ``bf16 = "auto"`` choose, false forbids it."""
    tf32: bool | None = None
    """Allow TF32 matmuls on Ampere or newer."""
    bfloat16: bool | None = None
    """Load the model in bf16 without mixed precision."""
    float16: bool | None = None
    """Load the model in fp16 without mixed precision."""
    gpu_memory_limit: Int | str | None = None
    """Memory limit for every GPU (an integer means GiB, or a string like ``20GiB``)."""
    lora_on_cpu: bool = False
    """Load LoRA/PEFT weights on the CPU (e.g. to merge a model larger than GPU memory)."""

    # ---- data ---------------------------------------------------------------
    datasets: list[DatasetConfig] = Field(default_factory=list)
    """Datasets to train on."""
    shuffle_merged_datasets: bool = True
    """Shuffle the rows of all datasets together; false keeps the order of ``datasets``."""
    test_datasets: list[DatasetConfig] | None = None
    """Datasets to evaluate on (instead of ``val_set_size``)."""
    rl: Literal["dpo", "ipo", "kto_pair", "kto", "orpo", "simpo"] | None = None
    """Preference training instead of supervised fine-tuning: ``dpo``, ``ipo`` (DPO with the IPO loss),
    ``kto``, ``orpo``, ``simpo`` (``kto_pair`` is refused: TRL removed it)."""
    rl_beta: float | None = None
    """Beta of the preference loss (TRL's default 0.1; SimPO 2.0). ORPO reads ``orpo_alpha`` instead."""
    orpo_alpha: float | None = None
    """ORPO: weight of the odds-ratio term against the NLL of the chosen answer (default 0.1)."""
    simpo_gamma: float | None = None
    """SimPO: target reward margin (default 0.5)."""
    cpo_alpha: float | None = None
    """SimPO: weight of the NLL of the chosen answer (TRL's CPO default 1.0; 0 is pure SimPO)."""
    kto_desirable_weight: float | None = None
    """KTO: weight of the losses of desirable rows (default 1.0)."""
    kto_undesirable_weight: float | None = None
    """KTO: weight of the losses of undesirable rows (default 1.0)."""
    dpo_loss_type: list[str] | None = None
    """DPO loss variants, summed with ``dpo_loss_weights``: ``sigmoid`` (default), ``hinge``, ``ipo``,
    ``robust``, ``sft``."""
    dpo_loss_weights: list[float] | None = None
    """Weights of the ``dpo_loss_type`` losses (one each; default 1.0 each)."""
    dpo_label_smoothing: float | None = None
    """Probability that a preference label is flipped, for ``dpo_loss_type: [robust]`` (as in TRL,
    the sigmoid, hinge and ipo losses do not read it, so setting it with them is an error)."""
    rpo_alpha: float | None = None
    """RPO: adds ``rpo_alpha`` × the NLL of the chosen answer to the DPO loss (TRL's ``sft`` loss)."""
    precompute_ref_log_probs: bool | None = None
    """Compute the reference model's log-probs of every sequence once before training, then free it."""
    chat_template: str | None = None
    """Chat template saved to the tokenizer and used by ``chat_template`` datasets (``chatml``, ``inst``,
    ``gemma``, ``alpaca``, ``tokenizer_default``, ``jinja``, ...)."""
    chat_template_jinja: str | None = None
    """Jinja template text (or path) when ``chat_template = "jinja"``."""
    default_system_message: str | None = None
    """Replaces the chat template's default system message."""
    eot_tokens: list[str] | None = None
    """(Axolotl 0.19) Texts that end a turn in ``chat_template`` datasets, trained per ``train_on_eos``;
    default: the template's end-of-turn marker and the tokenizer's EOS."""
    dataset_prepared_path: str | None = None
    """Folder where the prepared (tokenized) dataset is stored and reused."""
    push_dataset_to_hub: str | None = None
    """Hub repo to push the prepared dataset to."""
    dataset_num_proc: PositiveInt | None = None
    """Threads used to prepare the data (axr: Rust worker threads); default: the number of CPU cores.
    ``dataset_processes`` is read as this."""
    dataset_keep_in_memory: bool | None = None
    """Keep the dataset in memory while preprocessing."""
    hub_model_id: str | None = None
    """Hub repo the trained model/adapter, tokenizer and config are pushed to (created private)."""
    hub_strategy: str | None = None
    """When ``hub_model_id`` is pushed: ``end``, ``every_save`` (default), ``checkpoint`` (also
    ``last-checkpoint/``) or ``all_checkpoints`` (also every ``checkpoint-N/``)."""
    hf_use_auth_token: bool | None = None
    """Use the Hugging Face token to load datasets."""
    val_set_size: Annotated[Float, Field(ge=0)] = 0.0
    """Evaluation split of the training rows: a fraction when below 1, else a whole number of rows;
    0 means no evaluation split."""
    dataset_shard_num: PositiveInt | None = None
    """Split the whole dataset into this many shards."""
    dataset_shard_idx: NonNegativeInt | None = None
    """Index of the shard of the whole dataset to use."""
    pretraining_dataset: str | list[DatasetConfig] | None = None
    """Pre-training text (Axolotl's streaming key): a path or hub id, or a list of entries with
    ``path``, ``type`` (``pretrain``, the default, or ``completion``), ``text_column``, ``name``,
    ``split``, ``data_files``. Read as a stream in bounded memory into the prepared store, long
    documents split into ``sequence_len`` chunks; needs ``max_steps``; not with ``datasets``."""
    pretrain_multipack_attn: bool = True
    """With ``pretraining_dataset`` and ``sample_packing``: the documents packed in a row attend only
    to themselves (block-diagonal attention, positions restart; the default), or, when false, the
    row is one sequence whose tokens attend across documents (continuous positions)."""

    # ---- sequence and packing -----------------------------------------------
    sequence_len: Annotated[PositiveInt, AfterValidator(_sequence_len_bound)] = 512
    """Maximum tokens in a training sample (and bin capacity when packing); at most the model's
    context (``max_position_embeddings``, with rope scaling), checked when training starts."""
    pad_to_sequence_len: bool | None = None
    """Pad every batch to ``sequence_len`` tokens."""
    sample_packing: bool = False
    """Pack several samples per row with block-diagonal attention and per-sample position ids."""
    eval_sample_packing: bool | None = None
    """Pack evaluation samples too (default: same as ``sample_packing``)."""
    sample_packing_eff_est: Annotated[Float, Field(gt=0, le=1)] | None = None
    """Packing efficiency estimate (Axolotl); axr computes it exactly."""
    total_num_tokens: NonNegativeInt | None = None
    """Total token count of the dataset (Axolotl); axr computes it."""
    device_map: str | dict[str, Any] | None = None
    """transformers ``device_map`` when loading without accelerate."""
    max_memory: dict[str, Int | str] | None = None
    """Max memory per device passed to transformers."""

    # ---- adapters -----------------------------------------------------------
    adapter: Adapter = None
    """``lora``, ``qlora`` or empty for a full fine-tune."""
    lora_model_dir: str | None = None
    """Folder or hub id of an already-trained LoRA adapter to load."""
    lora_r: PositiveInt = 8
    """LoRA rank."""
    lora_alpha: Annotated[Float, Field(gt=0)] = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: Fraction = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: str | list[str] | None = None
    """Module names (or one regex) that get LoRA weights."""
    lora_target_linear: bool | None = None
    """Put LoRA on every linear layer (except the output head)."""
    peft_layers_to_transform: list[NonNegativeInt] | None = None
    """Layer indices to adapt; default: all."""
    lora_modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter (e.g. ``embed_tokens``, ``lm_head``); float32
    under bf16/fp16 autocast."""
    lora_fan_in_fan_out: bool | None = None
    """The target layers store weights as (fan_in, fan_out) (GPT-2 Conv1D)."""
    lora_target_parameters: str | list[str] | None = None
    """Parameters (not modules) that get LoRA weights, e.g. MoE expert tensors (PEFT
    ``target_parameters``); needs ``lora_dropout = 0``."""
    peft_use_dora: bool | None = None
    """DoRA: weight-decomposed LoRA (PEFT ``use_dora``)."""
    peft_use_rslora: bool | None = None
    """Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r (PEFT ``use_rslora``)."""
    unfrozen_parameters: list[str] | None = None
    """Full fine-tune: train only the parameters whose names match these patterns (regex, dots literal,
    matched from the start; an optional row range such as ``[:32000]``); all others stay frozen."""
    peft: PeftConfig | None = None
    """Extra PEFT options (LoftQ)."""
    relora_steps: PositiveInt | None = None
    """ReLoRA: steps between restarts (merge the adapter into the base, start it again); needs an adapter."""
    relora_warmup_steps: NonNegativeInt | None = None
    """ReLoRA: warmup steps after each restart."""
    relora_anneal_steps: NonNegativeInt | None = None
    """ReLoRA: anneal steps of each cycle."""
    relora_prune_ratio: Fraction | None = None
    """ReLoRA: share of the adapter's optimizer state zeroed at each restart (default 0.9; 0.999 for
    "reset")."""
    relora_cpu_offload: bool | None = None
    """ReLoRA: merge LoRA weights on the CPU at restarts."""
    relora: bool | None = None
    """ReLoRA (Axolotl's current name): merges and restarts the adapter every ``jagged_restart_steps``."""
    relora_prune_method: Literal["magnitude", "random", "reset"] | None = None
    """ReLoRA: how optimizer state is pruned at each restart."""
    jagged_restart_steps: PositiveInt | None = None
    """ReLoRA / jagged schedule: steps between restarts (Axolotl's name for ``relora_steps``)."""
    jagged_restart_warmup_steps: NonNegativeInt | None = None
    """Warmup steps after each restart (Axolotl's name for ``relora_warmup_steps``)."""
    jagged_restart_anneal_steps: NonNegativeInt | None = None
    """Anneal steps before each restart (Axolotl's name for ``relora_anneal_steps``)."""

    # ---- tracking -----------------------------------------------------------
    use_tensorboard: bool = False
    """Log to TensorBoard under ``output_dir`` (needs the tensorboard package)."""
    wandb_mode: str | None = None
    """wandb mode: ``online``, ``offline`` or ``disabled``."""
    wandb_project: str | None = None
    """wandb project (setting it turns wandb on)."""
    wandb_entity: str | None = None
    """wandb team."""
    wandb_watch: str | None = None
    """wandb model watching (``gradients``, ``parameters``, ``all``)."""
    wandb_name: str | None = None
    """wandb run name."""
    wandb_run_id: str | None = None
    """wandb run id."""
    wandb_log_model: str | None = None
    """Log the model to wandb: ``checkpoint`` or ``end``."""
    mlflow_tracking_uri: str | None = None
    """MLflow tracking URI (setting it turns MLflow on)."""
    mlflow_experiment_name: str | None = None
    """MLflow experiment name."""
    hf_mlflow_log_artifacts: bool | None = None
    """Copy each checkpoint to the MLflow artifact store."""

    # ---- inference page (axr inference --gradio) ----------------------------
    gradio_title: str | None = None
    """Title of the ``axr inference --gradio`` page (default: ``axr inference``)."""
    gradio_share: bool | None = None
    """Also serve the page through a public gradio.live link (default: off; Axolotl's is on)."""
    gradio_server_name: str | None = None
    """Address the page listens on (default ``127.0.0.1``; ``0.0.0.0`` for every interface)."""
    gradio_server_port: Annotated[Int, Field(ge=1, le=65535)] | None = None
    """Port of the page (default: gradio's, 7860 or the next free one)."""
    gradio_max_new_tokens: PositiveInt | None = None
    """Initial ``max_new_tokens`` of the page (default: ``--max_new_tokens``)."""
    gradio_temperature: Annotated[Float, Field(ge=0)] | None = None
    """Initial temperature of the page (default: ``--temperature``; 0 = greedy)."""

    # ---- training -----------------------------------------------------------
    output_dir: str = "./model-out"
    """Where checkpoints and the final model/adapter are written."""
    torch_compile: bool | Literal["auto"] | None = None
    """Compile the model with ``torch.compile``."""
    torch_compile_backend: str | None = None
    """``torch.compile`` backend."""
    gradient_accumulation_steps: PositiveInt = 1
    """Micro-batches per optimizer step."""
    micro_batch_size: PositiveInt = 1
    """Rows per micro-batch on each device (packed rows when ``sample_packing``)."""
    eval_batch_size: PositiveInt | None = None
    """Rows per evaluation batch (default: ``micro_batch_size``)."""
    num_epochs: PositiveFloat = 1.0
    """Passes over the training data (``max_steps`` wins when both are set)."""
    warmup_steps: NonNegativeInt | None = None
    """Learning-rate warmup steps (not with ``warmup_ratio``)."""
    warmup_ratio: Fraction | None = None
    """Learning-rate warmup as a fraction of total steps (not with ``warmup_steps``)."""
    learning_rate: PositiveFloat = 3e-5
    """Peak learning rate."""
    lr_quadratic_warmup: bool | None = None
    """Quadratic instead of linear warmup."""
    logging_steps: PositiveInt | None = None
    """Log every N optimizer steps."""
    eval_steps: Annotated[Float, Field(gt=0)] | None = None
    """Evaluate every N steps (a value < 1 is a fraction of total steps); not with ``evals_per_epoch``."""
    evals_per_epoch: NonNegativeInt | None = None
    """Evaluations per epoch (0: no evaluation); not with ``eval_steps``."""
    save_strategy: Annotated[Literal["no", "steps", "epoch", "best"] | None, BeforeValidator(_yaml_no)] = None
    """When to save checkpoints (``no`` skips them)."""
    save_steps: Annotated[Float, Field(gt=0)] | None = None
    """Save every N steps (a value < 1 is a fraction of total steps); not with ``saves_per_epoch``."""
    saves_per_epoch: PositiveInt | None = None
    """Checkpoints per epoch; not with ``save_steps``."""
    save_total_limit: PositiveInt | None = None
    """Keep at most this many checkpoints."""
    max_steps: PositiveInt | None = None
    """Stop after this many optimizer steps (wins over ``num_epochs``)."""
    eval_table_size: NonNegativeInt | None = None
    """Predictions logged to wandb per evaluation (0 turns it off)."""
    eval_max_new_tokens: PositiveInt | None = None
    """Tokens generated per logged prediction (default 128)."""
    eval_causal_lm_metrics: list[str] | None = None
    """Metrics computed on generated predictions (``sacrebleu``, ``comet``, ``ter``, ``chrf``)."""
    loss_watchdog_threshold: PositiveFloat | None = None
    """Abort when the loss stays above this value."""
    loss_watchdog_patience: PositiveInt | None = None
    """High-loss steps in a row before aborting (default 3)."""
    save_safetensors: bool | None = None
    """Save weights as safetensors (axr always does)."""
    train_on_inputs: bool = False
    """Also train on prompt (input) tokens, not only on responses."""
    group_by_length: bool = False
    """Batch rows of similar length together."""
    gradient_checkpointing: bool | Literal["unsloth", "offload"] = False
    """Recompute activations in backward to save memory."""
    gradient_checkpointing_kwargs: dict[str, Any] | None = None
    """Options of gradient checkpointing, e.g. ``use_reentrant = false``."""
    early_stopping_patience: PositiveInt | None = None
    """Stop after this many evaluations in a row without improvement."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule (``cosine``, ``linear``, ``constant``, ``one_cycle``, ``log_sweep``, ...)."""
    lr_scheduler_kwargs: dict[str, Any] | None = None
    """Extra options of the schedule."""
    cosine_min_lr_ratio: Annotated[Float, Field(ge=0, le=1)] | None = None
    """Cosine decays to this fraction of the peak learning rate (1: constant after warmup)."""
    cosine_constant_lr_ratio: Fraction | None = None
    """Hold the minimum learning rate from this fraction of training on."""
    lr_div_factor: PositiveFloat | None = None
    """``one_cycle`` initial learning rate divisor."""
    optimizer: str = "adamw_torch"
    """Optimizer name (transformers ``OptimizerNames``: ``adamw_torch``, ``adamw_torch_fused``, ``sgd``,
    ``adafactor``, ``adamw_bnb_8bit``, ``paged_adamw_8bit``, ...)."""
    optim_args: Annotated[dict[str, Any] | None, BeforeValidator(_key_values)] = None
    """Extra optimizer arguments: a table, or Axolotl's ``"k=v,k2=v2"`` string."""
    optim_target_modules: str | list[str] | None = None
    """Modules optimized by GaLore-style optimizers."""
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0
    """Weight decay."""
    adam_beta1: Fraction | None = None
    """Adam beta1 (default 0.9)."""
    adam_beta2: Fraction | None = None
    """Adam beta2 (default 0.999)."""
    adam_epsilon: PositiveFloat | None = None
    """Adam epsilon (default 1e-8)."""
    max_grad_norm: Annotated[Float, Field(ge=0)] = 1.0
    """Gradient clipping norm (0 turns clipping off)."""
    neftune_noise_alpha: PositiveFloat | None = None
    """NEFTune noise on embeddings (paper default 5)."""

    # ---- attention and kernels ----------------------------------------------
    flash_optimum: bool | None = None
    """Use optimum's BetterTransformer."""
    attn_implementation: str | None = None
    """Attention backend: ``sdpa`` (default), ``eager``, ``flash_attention_2`` (CUDA + flash-attn);
    ``flash_attention: true``, ``sdp_attention: true``, ``eager_attention: true`` are read as these."""
    flash_attn_cross_entropy: bool | None = None
    """flash-attention's cross-entropy kernel."""
    flash_attn_rms_norm: bool | None = None
    """flash-attention's RMSNorm kernel."""
    flash_attn_fuse_qkv: bool | None = None
    """Fuse the Q, K and V projections."""
    flash_attn_fuse_mlp: bool | None = None
    """Fuse part of the MLP."""
    s2_attention: bool | None = None
    """Shifted-sparse attention (Llama only)."""

    # ---- checkpoints and run ------------------------------------------------
    resume_from_checkpoint: str | None = None
    """Checkpoint folder to resume from."""
    auto_resume_from_checkpoints: bool = False
    """Resume from the newest checkpoint in ``output_dir`` when there is one."""
    local_rank: Int | None = None
    """Set by the launcher; do not set it."""
    special_tokens: SpecialTokensConfig | None = None
    """Special tokens to set or add."""
    tokens: list[str] | None = None
    """Extra (non-special) tokens to add to the tokenizer."""
    fsdp: list[str] | None = None
    """FSDP options, e.g. ``["full_shard", "auto_wrap"]``."""
    fsdp_config: FsdpConfig | None = None
    """FSDP plugin settings."""
    fsdp_version: Literal[1, 2] | None = None
    """FSDP generation (same as ``fsdp_config.fsdp_version``)."""
    deepspeed: str | dict[str, Any] | None = None
    """DeepSpeed config: a JSON file, a shipped one (``zero1``, ``zero2``, ``zero3``, ``zero3_bf16``,
    ``zero3_bf16_cpuoffload_all``, also as ``deepspeed_configs/<name>.json``) or the config itself."""
    ddp_timeout: PositiveInt | None = None
    """DDP timeout in seconds."""
    ddp_bucket_cap_mb: PositiveInt | None = None
    """DDP gradient bucket size in MB."""
    ddp_broadcast_buffers: bool | None = None
    """DDP broadcast buffers."""
    ddp_find_unused_parameters: bool | None = None
    """DDP find_unused_parameters (needed when some parameters get no gradient in a step)."""
    torchdistx_path: str | None = None
    """Path to torchdistx (for ``adamw_anyprecision``)."""
    debug: bool | None = None
    """Debug output (e.g. show prepared samples)."""
    seed: NonNegativeInt = 42
    """Seed of shuffling, packing order and initialization."""
    strict: bool | None = None
    """(Axolotl) allow CLI overrides of config keys; axr always does."""

    plugins: list[str] | None = None
    """Axolotl plugin import paths (``axolotl.integrations.liger.LigerPlugin``, ...); each is mapped
    to what axr does for its feature."""

    # ---- axr-only -----------------------------------------------------------
    on_bad_row: Literal["error", "skip"] = "error"
    """(axr) A malformed row stops preprocessing (``error``) or is skipped, counted and reported
    (``skip``)."""
    excess_length_strategy: Literal["drop", "truncate", "split"] | None = None
    """(axr) Samples longer than ``sequence_len`` are dropped, truncated, or (``completion`` and
    ``pretraining_dataset`` data only) split into ``sequence_len`` chunks; counted either way. Default:
    ``split`` for completion data and ``drop`` for the rest, as Axolotl does."""
    special_tokens_in_text: Literal["report", "error"] = "report"
    """(axr) A row whose text (any field, any dataset type) holds a special token's string (``<s>``,
    ``<|im_end|>``) tokenizes as that control token. ``report``: the data doctor counts such rows;
    ``error``: preprocessing stops at the first one, naming file, line and field (checked once, when the
    store is built). (No ``escape``: no escaping keeps the ids exact.)"""
    chat_template_limits: ChatTemplateLimits | None = None
    """(axr) Per-row limits of chat-template renders (templates arrive with downloaded models):
    ``{instructions = 20000000, output_mib = 64, memory_mib = 256}`` by default; a render past one
    is an error naming the template and the row (skipped and counted under ``on_bad_row = "skip"``)."""
    packing_strategy: Literal["bfd", "ffd", "shuffle", "sequential"] = "bfd"
    """(axr) How samples are packed into bins: best-fit-decreasing, first-fit-decreasing, shuffled
    first-fit, or in order."""

    @model_validator(mode="after")
    def _check_pairs(self) -> AxrConfig:
        problems = top_level_conflicts(self.model_dump())
        if problems:
            raise PydanticCustomError("config_conflict", "{message}", {"message": "\n".join(problems)})
        return self

    def __eq__(self, other: object) -> bool:
        # Two configs are equal when every key resolves the same; the file they
        # came from (a TOML and a YAML twin) does not matter.
        if not isinstance(other, AxrConfig):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    @property
    def notes(self) -> list[str]:
        """One line per key that has no effect in axr, and per old spelling read as a new key."""
        return list(self._notes)

    @property
    def ledger_only_keys(self) -> dict[str, Any]:
        """Keys accepted by name only (no typed field) that the file set, by their path."""
        return dict(self._ledger_only)

    @property
    def config_path(self) -> str | None:
        """The file this config was loaded from (None when built in code)."""
        return self._source_path

    def resolved_dict(self) -> dict[str, Any]:
        """Every key with its value after defaults and overrides, as plain JSON-able data."""
        return self.model_dump(mode="json")
