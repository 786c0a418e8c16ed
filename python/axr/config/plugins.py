"""Axolotl's ``plugins:`` list: each plugin path mapped to what axr does for its feature.

A plugin whose feature axr has built in (or does not need) validates with a note saying so;
one whose feature axr lacks is refused as *not supported yet*, naming the plugin; a path that
is no Axolotl plugin is an error. The plugins' own keys are in the key ledger like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from axr.config.ledger import NoEffect, NotYet

PLUGINS: dict[str, NoEffect | NotYet] = {
    "axolotl.integrations.liger.LigerPlugin": NoEffect(
        "Liger's fused GPU kernels compute the same model; axr trains without them"
    ),
    "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin": NoEffect(
        "axr computes the loss only on trained positions; the fused kernel gives the same loss"
    ),
    "axolotl.integrations.kernels.KernelsPlugin": NoEffect(
        "MoE expert kernels compute the same experts faster; their quantization keys are checked on their own"
    ),
    "axolotl.integrations.expert_parallel.ExpertParallelPlugin": NotYet("expert parallelism for MoE models"),
    "axolotl.integrations.swanlab.SwanLabPlugin": NotYet("logging to SwanLab"),
    "axolotl.integrations.diffusion.DiffusionPlugin": NotYet("diffusion language-model training"),
    "axolotl.integrations.llm_compressor.LLMCompressorPlugin": NotYet(
        "model compression with LLM Compressor"
    ),
    "axolotl.integrations.spectrum.SpectrumPlugin": NotYet("Spectrum layer selection"),
    "axolotl.integrations.lm_eval.LMEvalPlugin": NotYet("lm-eval-harness evaluation"),
    "axolotl.integrations.grokfast.GrokfastPlugin": NotYet("Grokfast gradient filtering"),
    "axolotl.integrations.kd.KDPlugin": NotYet("knowledge distillation"),
    "axolotl.integrations.densemixer.DenseMixerPlugin": NotYet("DenseMixer router training"),
    "axolotl.integrations.mora.MoraPlugin": NotYet("MoRA adapters"),
    "axolotl.integrations.hatchery.HatcheryPlugin": NotYet("remote training on Tinker/Hatchery"),
    "axolotl.integrations.nemo_gym.NemoGymPlugin": NotYet("NeMo Gym environment rewards"),
}


def _short(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def plugin_problems_and_notes(plugins: Sequence[object]) -> tuple[list[str], list[str]]:
    """(problems, notes) for the entries of ``plugins``."""
    problems: list[str] = []
    notes: list[str] = []
    by_class = {_short(path): path for path in PLUGINS}
    for position, plugin in enumerate(plugins):
        where = f"plugins[{position}]"
        if not isinstance(plugin, str):
            problems.append(f"{where}: expected a plugin's import path (got {plugin!r})")
            continue
        entry = PLUGINS.get(plugin)
        if entry is None:
            known = by_class.get(_short(plugin))
            hint = f" (did you mean '{known}'?)" if known else ""
            problems.append(f"{where}: unknown plugin {plugin!r}{hint}")
        elif isinstance(entry, NotYet):
            problems.append(f"{where}: not supported yet: {_short(plugin)} ({entry.would})")
        else:
            notes.append(f"{where}: {_short(plugin)} has no effect in axr: {entry.why}")
    return problems, notes
