"""LoRA adapters through PEFT: the policy trains low-rank adapters on a frozen base model.

``model.lora: {r, alpha, dropout, target_modules, ...}`` (any ``peft.LoraConfig`` field; ``alpha``
and ``dropout`` are short for ``lora_alpha`` and ``lora_dropout``). The reference model of the KL
term is the same base with the adapters switched off (:class:`AdapterReference`), never a second
copy; after a reference reset (iterative RL) it is a frozen copy of the adapters, again on the same
base. Checkpoints and ``final/`` hold the adapters (PEFT format); ``cohort export`` (or
``model.export_merged``) writes a merged model that ``AutoModelForCausalLM`` loads.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

ALIASES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}
REFERENCE_ADAPTER = "reference"
INSTALL_HINT = "LoRA needs PEFT: pip install 'cohort[lora]' (or pip install peft)"


class LoraError(ValueError):
    """The LoRA settings do not fit the model (unknown option, no such module, unsupported layer)."""


def _peft():
    try:
        import peft
    except ImportError:
        raise LoraError(INSTALL_HINT) from None
    return peft


def lora_config(options: dict[str, Any]):
    """A ``peft.LoraConfig`` for a causal LM from the user's options; a wrong key names the allowed ones."""
    peft = _peft()
    fields = {f.name for f in dataclasses.fields(peft.LoraConfig)} - {"task_type", "peft_type", "base_model_name_or_path"}
    settings = {ALIASES.get(key, key): value for key, value in options.items()}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise LoraError(f"model.lora.{unknown[0]} is not a LoRA option; allowed: alpha, dropout, " + ", ".join(sorted(fields)))
    settings.setdefault("r", 8)
    settings.setdefault("lora_alpha", 2 * settings["r"])
    try:
        return peft.LoraConfig(task_type="CAUSAL_LM", **settings)
    except (TypeError, ValueError) as err:
        raise LoraError(f"model.lora: {err}") from None


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (what ``target_modules`` can name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)})


def add_adapters(model: torch.nn.Module, options: dict[str, Any], adapters: str | os.PathLike | None = None):
    """The model with trainable LoRA adapters: new ones from ``options``, or the ones saved in
    ``adapters`` (a checkpoint directory). Errors name the linear modules the model has."""
    peft = _peft()
    config = lora_config(options)
    found = linear_module_names(model)
    with warnings.catch_warnings():  # PEFT reads transformers' deprecated alias; nothing for a user to change
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return _wrap(peft, model, config, found, adapters)


def _wrap(peft, model: torch.nn.Module, config, found: list[str], adapters: str | os.PathLike | None):
    try:
        if adapters is not None:
            wrapped = peft.PeftModel.from_pretrained(model, str(adapters), is_trainable=True)
            if (Path(adapters) / REFERENCE_ADAPTER).is_dir():
                wrapped.load_adapter(str(Path(adapters) / REFERENCE_ADAPTER), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
                wrapped.set_adapter("default")
            return wrapped
        return peft.get_peft_model(model, config)
    except (ValueError, TypeError, RuntimeError) as err:
        raise LoraError(f"model.lora does not fit {type(model).__name__}: {err} (its linear modules: {', '.join(found)})") from None


def load_adapters(model: torch.nn.Module, adapters: str | os.PathLike):
    """``model`` with the (frozen) adapters saved in ``adapters``, for evaluation and export."""
    peft = _peft()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return peft.PeftModel.from_pretrained(model, str(adapters)).eval()


def is_adapted(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a PEFT model (trains adapters). No model is one while peft was never
    imported, so a run without LoRA does not pay its import (~0.1 s per process)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


class AdapterReference(torch.nn.Module):
    """The reference policy of a LoRA run: the policy's base model with the adapters off (or, after a
    reset, with a frozen copy of the adapters). It holds no weights of its own."""

    def __init__(self, policy) -> None:
        super().__init__()
        self._policy = [policy]  # a list: not registered as a submodule, so no parameter is counted twice
        self.reset_done = policy.peft_config.get(REFERENCE_ADAPTER) is not None

    @property
    def policy(self):
        return self._policy[0]

    @property
    def config(self):
        return self.policy.get_base_model().config

    def get_input_embeddings(self):
        return self.policy.get_input_embeddings()

    def forward(self, *args: Any, **kwargs: Any):
        policy = self.policy
        if not self.reset_done:
            with policy.disable_adapter():
                return policy.get_base_model()(*args, **kwargs)
        policy.set_adapter(REFERENCE_ADAPTER)
        try:
            return policy.get_base_model()(*args, **kwargs)
        finally:
            policy.set_adapter("default")  # makes the policy's adapters trainable again

    def reset_to_policy(self) -> None:
        """pi_ref <- pi_theta: copy the policy's current adapters into the frozen reference adapter."""
        policy = self.policy
        if REFERENCE_ADAPTER not in policy.peft_config:
            policy.add_adapter(REFERENCE_ADAPTER, policy.peft_config["default"])
        with torch.no_grad():
            params = dict(policy.named_parameters())
            for name, tensor in params.items():
                if f".{REFERENCE_ADAPTER}." in name:
                    tensor.copy_(params[name.replace(f".{REFERENCE_ADAPTER}.", ".default.")])
                    tensor.requires_grad_(False)
        policy.set_adapter("default")
        self.reset_done = True


def merged_weights(policy) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights of ``policy`` with its active adapters merged (``W + scale * B @ A``), named as the
    base model's checkpoint names them, for a rollout engine that serves the merged model. The
    policy is not changed: merging in place and back would drift the base weights by rounding."""
    from peft.tuners.lora import LoraLayer

    base = policy.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            adapters = [a for a in module.active_adapters if a in module.lora_A]
            if adapters:
                deltas[f"{name}.base_layer.weight"] = sum(module.get_delta_weight(a) for a in adapters)
    with torch.no_grad():
        for name, tensor in base.state_dict().items():
            if ".lora_" in name:
                continue
            merged = tensor + deltas[name].to(tensor.dtype) if name in deltas else tensor
            yield name.replace(".base_layer.", "."), merged.detach()


def merged_model(policy):
    """A plain HF model with the adapters merged into the weights (for ``cohort export``)."""
    import copy

    clone = copy.deepcopy(policy)
    if REFERENCE_ADAPTER in clone.peft_config:
        clone.delete_adapter(REFERENCE_ADAPTER)
    return clone.merge_and_unload()


def base_model_path(adapter_dir: str | os.PathLike) -> str | None:
    """The base model an adapter directory was trained on (``adapter_config.json``), or None if it is no adapter directory."""
    import json

    config = Path(adapter_dir) / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("base_model_name_or_path")
