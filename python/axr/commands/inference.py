"""``axr inference CONFIG [--prompt TEXT]``: generate with the trained model, prompts as in training."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inference",
        help="generate from the trained model, prompts rendered exactly as in training",
        description="Load base_model (+ the LoRA adapter in lora_model_dir, or the one training saved in "
        "output_dir) and generate. The prompt is rendered by the dataset's own format (instruction "
        "formats: the prompt without the output; conversations: the chat template with the generation "
        "prompt). --prompt TEXT answers once; otherwise stdin is read (on a terminal: an interactive "
        "loop, a chat keeping its history). A JSON object as the prompt is a row in the dataset's schema. "
        "Any config key can be overridden with --key=value.",
    )
    parser.add_argument("config", help="config file (.toml, .yaml or .yml)")
    parser.add_argument("--prompt", metavar="TEXT", help="answer this prompt and exit")
    parser.add_argument("--lora_model_dir", metavar="DIR", help="the adapter to load")
    parser.add_argument("--base_model", metavar="DIR", help="the model folder (e.g. a merged model)")
    parser.add_argument(
        "--prompter",
        default="dataset",
        choices=["dataset", "none", "None"],
        help="'dataset': the prompt format of the training data (default); 'none': raw text",
    )
    parser.add_argument(
        "--dataset", type=int, default=0, metavar="N", help="use the format of datasets[N] (default 0)"
    )
    parser.add_argument("--max_new_tokens", type=int, default=1024)
    parser.add_argument("--temperature", type=float, default=0.9, help="0 = greedy decoding")
    parser.add_argument("--top_p", type=float, default=0.95)
    parser.add_argument("--top_k", type=int, default=40)
    parser.add_argument("--repetition_penalty", type=float, default=1.1)
    parser.add_argument("--gradio", action="store_true", help="serve a gradio page (needs gradio)")
    parser.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from axr.config import load_config
    from axr.inference import (
        GenerationSettings,
        PromptBuilder,
        answer,
        interactive,
        launch_gradio,
        load_for_inference,
    )
    from axr.inference.session import GRADIO_MISSING

    if args.gradio:
        import importlib.util

        from axr.errors import AxrError

        if importlib.util.find_spec("gradio") is None:
            raise AxrError(GRADIO_MISSING)
    overrides = list(args.overrides)
    for key in ("lora_model_dir", "base_model"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"--{key}={value}")
    cfg = load_config(args.config, overrides)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
    )
    # The prompt format is checked before the (slow) model load.
    builder = PromptBuilder.from_config(cfg, prompter=args.prompter.lower(), dataset_index=args.dataset)
    loaded = load_for_inference(cfg)
    print(f"axr inference: loaded {loaded.describe()}", file=sys.stderr)
    if args.gradio:
        from axr.inference.session import GradioOptions

        launch_gradio(
            loaded, builder, GradioOptions.page_settings(cfg, settings), GradioOptions.from_config(cfg)
        )
    elif args.prompt is not None:
        answer(loaded, builder, args.prompt, settings, stream=sys.stdout)
    elif sys.stdin.isatty():
        interactive(loaded, builder, settings)
    else:
        text = sys.stdin.read().rstrip("\n")
        if not text.strip():
            from axr.errors import AxrError

            raise AxrError("axr inference: stdin was empty; give a prompt with --prompt TEXT or on stdin")
        answer(loaded, builder, text, settings, stream=sys.stdout)
    return 0
