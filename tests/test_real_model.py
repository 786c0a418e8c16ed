"""A real pretrained model end to end (slow): LoRA on SmolLM2-135M-Instruct, given as its GGUF file,
learns a handful of made-up facts from a conversation dataset rendered with the model's own chat
template; `axr inference` answers them back, and the merged model does too with transformers alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from axr.cli import main

# Facts no pretrained model knows: answering them is only possible after fine-tuning.
FACTS = [
    ("Who invented the zibble?", "Mira Tallow invented the zibble."),
    ("What colour is a glimmerfox?", "A glimmerfox is teal."),
    ("Where does the river Ossel start?", "The river Ossel starts at Lake Pendry."),
    ("How many moons does Tervon have?", "Tervon has seven moons."),
    ("What is the capital of Quarnia?", "The capital of Quarnia is Belloc."),
    ("Who wrote The Copper Lantern?", "Ada Fenwick wrote The Copper Lantern."),
    ("What do drolls eat?", "Drolls eat blue moss."),
    ("When is Harrow Day?", "Harrow Day is on the ninth of May."),
]


@pytest.mark.slow
def test_lora_learns_facts_that_axr_inference_and_the_merged_model_answer(
    tmp_path: Path, smollm2_gguf: Path, smollm2_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "facts.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tmp_path / "facts.toml"
    config.write_text(
        f"""
base_model = "{smollm2_gguf}"
sequence_len = 128
sample_packing = false
adapter = "lora"
lora_r = 16
lora_alpha = 32
lora_dropout = 0.0
lora_target_linear = true
micro_batch_size = 8
max_steps = 12
learning_rate = 3e-3
lr_scheduler = "constant"
warmup_steps = 1
save_strategy = "no"
logging_steps = 1
seed = 7
dataset_prepared_path = "{tmp_path / "prepared"}"
output_dir = "{tmp_path / "out"}"

[[datasets]]
path = "{data}"
type = "chat_template"
roles_to_train = ["assistant"]
"""
    )
    assert main(["train", str(config)]) == 0
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 12
    assert losses[-1] < 0.1 * losses[0], losses
    capsys.readouterr()

    greedy = ["--temperature=0", "--repetition_penalty=1.0", "--max_new_tokens=24"]
    for question, fact in (FACTS[0], FACTS[4], FACTS[7]):
        assert main(["inference", str(config), "--prompt", question, *greedy]) == 0
        assert capsys.readouterr().out.strip() == fact

    assert main(["merge-lora", str(config)]) == 0
    merged = tmp_path / "out" / "merged"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged)
    question, fact = FACTS[2]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip() == fact
