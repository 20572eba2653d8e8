"""Find and load models and tokenizers: a local directory, the local Hugging Face cache, or the Hub.

When none has the model, loading fails within seconds with :class:`ModelNotFoundError` instead of
retrying downloads for minutes. Policies load with gradients on and every tensor in a storage of
its own (bit-exact resume); references load frozen.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

CONFIG_FILE = "config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
HUB_PROBE_TIMEOUT_S = 5.0
# A Hub repo id: "name" or "owner/name" (letters, digits, "-", "_", ".").
_HUB_ID = re.compile(r"^(?!\.)[\w.-]+(/[\w.-]+)?$")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class ModelNotFoundError(ValueError):
    """The model (or tokenizer) is neither a local directory nor in the local HF cache, and the Hub
    could not provide it."""



# --------------------------------------------------------------------------------------------
# Finding a model
# --------------------------------------------------------------------------------------------


def _missing_model_files(directory: Path) -> str | None:
    """What a directory lacks to hold a model, or None when it holds one."""
    if not (directory / CONFIG_FILE).is_file():
        return f"missing {CONFIG_FILE}"
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        return f"no weights file (one of {', '.join(WEIGHT_FILES)})"
    return None


def _missing_tokenizer_files(directory: Path) -> str | None:
    """What a directory lacks to hold a tokenizer, or None when it holds one."""
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        return f"no tokenizer files (one of {', '.join(TOKENIZER_FILES)})"
    return None


def _cached_snapshot(repo_id: str, required_file: str) -> Path | None:
    """The snapshot folder of ``repo_id`` in the local HF cache if it holds ``required_file``."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(repo_id, required_file)
    except HFValidationError:  # not a valid repo id after all
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _probe_hub(repo_id: str, searched: str) -> None:
    """Raise ModelNotFoundError unless the Hub answers quickly that ``repo_id`` exists.

    One short request (no retries), so a machine without network fails in seconds; the actual
    download is left to ``from_pretrained``.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    if os.environ.get("HF_HUB_OFFLINE", "0").upper() in {"1", "ON", "YES", "TRUE"}:
        raise ModelNotFoundError(f"{searched}, and HF_HUB_OFFLINE is set so the Hub was not asked")
    try:
        HfApi().model_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{searched}, and the Hugging Face Hub has no repository {repo_id!r} (or it is private: log in)"
        ) from None
    except Exception as error:  # network failures come from several HTTP libraries
        raise ModelNotFoundError(
            f"{searched}, and the Hugging Face Hub could not be reached ({type(error).__name__}: {error})"
        ) from None


def resolve_model_source(name_or_path: str | os.PathLike, *, what: str = "model") -> str:
    """Where to load ``name_or_path`` from: a local directory, a cached snapshot, or a Hub id.

    ``what`` is "model" or "tokenizer" (which files a local directory must hold). Raises
    :class:`ModelNotFoundError` (a ValueError) when no source has it, and ValueError for a local
    directory without the needed files.
    """
    if what not in {"model", "tokenizer"}:
        raise ValueError(f"what must be 'model' or 'tokenizer', got {what!r}")
    missing_files = _missing_model_files if what == "model" else _missing_tokenizer_files
    name = os.fspath(name_or_path)
    if not name:
        raise ValueError(f"{what} name or path must be a non-empty string")
    path = Path(name).expanduser()
    if path.is_dir():
        missing = missing_files(path)
        if missing is not None:
            raise ValueError(f"directory {str(path)!r} holds no {what}: {missing}")
        return str(path)
    if path.exists():
        raise ValueError(f"{what} path {str(path)!r} is a file; expected a model directory or a Hub id")
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(f"{what} {name!r} not found locally: no such directory")
    from huggingface_hub.constants import HF_HUB_CACHE

    required = CONFIG_FILE if what == "model" else "tokenizer_config.json"
    snapshot = _cached_snapshot(name, required)
    if snapshot is not None and missing_files(snapshot) is None:
        return str(snapshot)
    searched = f"{what} {name!r} not found locally (no such directory, not in the local HF cache {HF_HUB_CACHE})"
    _probe_hub(name, searched)
    return name


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def check_causal_lm(name_or_path: str | os.PathLike, setting: str = "model.path") -> None:
    """A local model directory must hold a causal LM (its config.json's ``architectures``), not a
    reward model or an encoder: checked before any weight loads. Hub ids are checked when they load."""
    config_file = Path(name_or_path) / CONFIG_FILE
    if not config_file.is_file():
        return
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return  # not readable as JSON: from_pretrained will say what is wrong with it
    if architectures and not any(name.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for name in architectures):
        raise ValueError(f"{setting}={os.fspath(name_or_path)!r} holds a {architectures[0]}, not a causal language model "
                         f"(a *ForCausalLM): the policy must generate text; a scoring model belongs in reward.functions "
                         f"(reward_model) or reward.process_model")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a dtype or a name such as "float32", "bf16"."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be a torch.dtype or one of {sorted(_DTYPES)}, got {dtype!r}")


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device from a device or a name: "auto" (CUDA when available, else CPU), "cpu", "cuda:0"."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', a torch.device or a name like 'cpu' or 'cuda:0', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available on this machine")
    return resolved


AUTOCAST_CHOICES = (None, "bfloat16", "float16")


def autocast_context(device: torch.device, precision: str | None) -> contextlib.AbstractContextManager:
    """torch.autocast to ``precision`` on ``device`` (matmuls in low precision, reductions such as
    softmax in float32), or a no-op for None."""
    if precision not in AUTOCAST_CHOICES:
        raise ValueError(f"autocast must be one of {AUTOCAST_CHOICES}, got {precision!r}")
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=resolve_dtype(precision))


def load_policy(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """The trainable causal LM: weights in ``dtype`` on ``device``, gradients on.

    A LoRA adapter directory (``adapter_config.json``) loads its base model with the adapters on.
    Returned in eval mode (dropout off, the usual choice for RL fine-tuning); call ``.train()``
    to enable dropout.
    """
    from cohort.models.lora import base_model_path

    base = base_model_path(name_or_path) if Path(name_or_path).is_dir() else None
    if base is not None:
        from cohort.models.lora import load_adapters

        model = load_policy(base, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        return load_adapters(model, name_or_path)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    source = resolve_model_source(name_or_path, what="model")
    from transformers import (
        AutoModelForCausalLM,  # imported on first use: ~1 s that config checks do not need
    )

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    model.to(target)
    own_storage(model)
    model.eval()
    model.requires_grad_(True)
    return model


def own_storage(model: torch.nn.Module) -> None:
    """Give every parameter and buffer a storage of its own.

    Loaded weights can be views into one memory-mapped file at arbitrary byte offsets; kernels then
    take different (unaligned) code paths than for freshly allocated tensors, so a resumed run would
    round differently from an uninterrupted one. Copies keep resume bit-exact and detach the model
    from the file. Tied weights stay tied (each storage is copied once)."""
    copies: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            key = tensor.data_ptr()
            if key not in copies:
                copies[key] = tensor.data.clone()
            tensor.data = copies[key]


def load_reference(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A frozen copy of a causal LM for the KL term: eval mode, no parameter requires grad."""
    model = load_policy(name_or_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    model.requires_grad_(False)
    return model


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token guaranteed (EOS is used when it defines none).

    Raises ValueError when it has neither a pad nor an EOS token.
    """
    source = resolve_model_source(name_or_path, what="tokenizer")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {os.fspath(name_or_path)!r} has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def eos_token_ids(
    tokenizer: PreTrainedTokenizerBase, generation_config: GenerationConfig | None = None
) -> tuple[int, ...]:
    """Every token id that ends a completion: the tokenizer's EOS and the generation config's.

    A model may declare several (e.g. ``<|im_end|>`` and ``<|endoftext|>``). Sorted, no repeats;
    ValueError when neither source declares one.
    """
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    declared = generation_config.eos_token_id if generation_config is not None else None
    if isinstance(declared, int):
        ids.add(declared)
    elif declared is not None:
        ids.update(int(i) for i in declared)
    if not ids:
        raise ValueError("neither the tokenizer nor the generation config declares an EOS token id")
    return tuple(sorted(ids))
