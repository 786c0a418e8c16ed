"""Generation from a trained model with the prompt format of its training data.

``PromptBuilder`` renders prompts through the native formatters preprocessing used;
``load_for_inference`` loads the base model and adapter with the training loaders;
``generate`` runs transformers' generation on exactly the rendered ids.
Importing this package does not import torch.
"""

from __future__ import annotations

from axr.inference.generate import GenerationSettings, generate
from axr.inference.model import LoadedModel, adapter_dir_of, load_for_inference
from axr.inference.prompts import PromptBuilder, RenderedPrompt, format_keys_of
from axr.inference.session import answer, interactive, launch_gradio

__all__ = [
    "GenerationSettings",
    "LoadedModel",
    "PromptBuilder",
    "RenderedPrompt",
    "adapter_dir_of",
    "answer",
    "format_keys_of",
    "generate",
    "interactive",
    "launch_gradio",
    "load_for_inference",
]
