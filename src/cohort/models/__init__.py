"""Load policy, reference model and tokenizer; render prompts; score completions token by token.

Models are found in this order: a local directory, the local Hugging Face cache, the Hub. When
none has the model, loading fails within seconds with :class:`ModelNotFoundError` instead of
retrying downloads for minutes.

The training forward :func:`completion_logprobs` scores right-padded completions after
left-padded prompts with exactly the temperature scaling used by the rollout engine, so that the
ratio pi_theta / pi_old is 1 at the first update when nothing has changed. Rows that share a prompt
(the G samples of a group) run that prompt through the model once, as the rollout engine does.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, GenerationConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cohort.algo.ops import DEFAULT_CHUNK_ROWS, entropy_from_logits, token_logprobs

Message = Mapping[str, str]
Prompt = Union[str, Sequence[Message]]

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


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


def _check_messages(messages: Sequence[Message], where: str) -> list[dict[str, str]]:
    if len(messages) == 0:
        raise ValueError(f"{where}: the message list is empty")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str) or not isinstance(
            message.get("content"), str
        ):
            raise ValueError(
                f"{where}: message {index} must be a dict with string 'role' and 'content', got {message!r}"
            )
        checked.append({"role": message["role"], "content": message["content"]})
    return checked


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, *, chat: bool = False, where: str = "prompt"
) -> str:
    """The text the model sees for ``prompt``.

    A string is used as is unless ``chat`` is True, in which case it becomes one user message.
    A list of ``{"role", "content"}`` messages always goes through the tokenizer's chat template
    (with the generation prompt appended). ``where`` names the prompt in error messages.
    """
    if isinstance(prompt, str):
        if not chat:
            return prompt
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence):
        messages = _check_messages(prompt, where)
    else:
        raise ValueError(f"{where}: expected a string or a list of messages, got {type(prompt).__name__}")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"{where}: chat formatting was asked for but the tokenizer has no chat template "
            "(use plain string prompts with chat=False, or a tokenizer that defines chat_template)"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], *, chat: bool = False
) -> list[list[int]]:
    """Token ids of each prompt, ready for the rollout engine.

    Plain prompts get the tokenizer's special tokens (e.g. BOS); chat-rendered ones do not, since
    the template already writes them.
    """
    texts = [render_prompt(tokenizer, prompt, chat=chat, where=f"prompt {index}") for index, prompt in enumerate(prompts)]
    templated = [chat or not isinstance(prompt, str) for prompt in prompts]
    encoded: list[list[int]] = [[] for _ in prompts]
    for kind in (False, True):  # one tokenizer call per kind: batched encoding is much cheaper per prompt
        indices = [index for index, flag in enumerate(templated) if flag == kind]
        if indices:
            ids = tokenizer([texts[index] for index in indices], add_special_tokens=not kind)["input_ids"]
            for index, row in zip(indices, ids):
                encoded[index] = list(row)
    for index, row in enumerate(encoded):
        if len(row) == 0:
            raise ValueError(f"prompt {index} encodes to no tokens")
    return encoded


# --------------------------------------------------------------------------------------------
# Per-token log-probs of completions (the training forward)
# --------------------------------------------------------------------------------------------


def left_padded_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore padding: 0 at each row's first real token (pads get 0 too).

    attention_mask: [n, L] bool -> [n, L] long
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [n, L]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside the wrappers a run may put around it: DistributedDataParallel (``.module``),
    a PEFT model (its base model, which holds the injected adapters) and the LoRA reference. Its
    config and forward signature are what the helpers below read; calls still go to ``model``."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "policy") and type(model).__name__ == "AdapterReference":
            model = model.policy
        else:
            return model


@functools.lru_cache(maxsize=None)
def _forward_parameters(model_type: type) -> frozenset[str]:
    """The named parameters of a model class's forward (read once per class: signatures are slow)."""
    return frozenset(inspect.signature(model_type.forward).parameters)


def supports_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the model's forward can compute only the last positions' logits."""
    return "logits_to_keep" in _forward_parameters(type(unwrap(model)))


def cache_kwargs(model: torch.nn.Module, cache: Cache) -> dict[str, Cache]:
    """The forward keyword that passes a KV cache: ``cache`` where the model's forward has it
    (recent transformers; 5.24 deprecates ``past_key_values``), else ``past_key_values`` (older
    releases). Decided once per model class."""
    name = "cache" if "cache" in _forward_parameters(type(unwrap(model))) else "past_key_values"
    return {name: cache}


def prefill_prompts(
    model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Run left-padded prompts once into a fresh KV cache (shared by the rollout engine and the
    training forward). -> (cache with one row per prompt, logits of each prompt's last position [P, V])"""
    cache = DynamicCache(config=unwrap(model).config)
    logits = model(
        input_ids=prompt_ids,  # [P, Lp]
        attention_mask=prompt_mask,
        position_ids=left_padded_position_ids(prompt_mask),
        use_cache=True,
        **cache_kwargs(model, cache),
        **({"logits_to_keep": 1} if supports_logits_to_keep(model) else {}),
    ).logits[:, -1, :]  # [P, V]
    return cache, logits


def _check_scoring_inputs(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor, completion_mask: torch.Tensor
) -> None:
    for name, ids, mask in (("prompt", prompt_ids, prompt_mask), ("completion", completion_ids, completion_mask)):
        if ids.dim() != 2:
            raise ValueError(f"{name}_ids must be 2-D [n, length], got shape {tuple(ids.shape)}")
        if mask.dtype != torch.bool:
            raise ValueError(f"{name}_mask must be a bool tensor (True = real token), got {mask.dtype}")
        if mask.shape != ids.shape:
            raise ValueError(f"{name}_mask shape {tuple(mask.shape)} differs from {name}_ids shape {tuple(ids.shape)}")
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"prompt_ids has {prompt_ids.shape[0]} rows but completion_ids has {completion_ids.shape[0]}; "
            "expand the prompts to one row per completion first"
        )
    if prompt_ids.shape[1] == 0 or completion_ids.shape[1] == 0:
        raise ValueError(
            "prompts and completions need at least one column, got widths "
            f"{prompt_ids.shape[1]} and {completion_ids.shape[1]}"
        )
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded: the last column of prompt_mask must be True in every row")


def shared_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct prompts among the rows and which one each row has.

    Two rows share a prompt when their real (masked-in) tokens are equal; padding ids are ignored.
    prompt_ids/prompt_mask: [n, Lp] -> (first row holding each distinct prompt [u] long, row -> prompt [n] long)
    """
    keyed = torch.where(prompt_mask, prompt_ids, -1)  # [n, Lp]; token ids are >= 0, so -1 marks padding
    _, inverse = torch.unique(keyed, dim=0, return_inverse=True)  # [n], values in 0..u-1
    rows = torch.arange(inverse.shape[0], device=inverse.device)  # [n]
    count = int(inverse.max()) + 1
    first = torch.full((count,), inverse.shape[0], dtype=torch.long, device=inverse.device)  # [u]
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")  # [u]
    return first, inverse


def prompts_shared_often_enough(distinct: int, rows: int) -> bool:
    """Whether ``rows`` rows with ``distinct`` prompts score each prompt once: when on average each
    is used at least twice (the second forward call costs about as much as a few prompt tokens)."""
    return 2 * distinct <= rows


def _prefix_sharing_pays(model: PreTrainedModel, distinct: int, rows: int) -> bool:
    """Score shared prompts once when they are shared often enough and the model can take a KV cache."""
    return prompts_shared_often_enough(distinct, rows) and not _recomputes_activations(model)


def _recomputes_activations(model: torch.nn.Module) -> bool:
    """Whether gradient (activation) checkpointing is active; it turns the KV cache off in training."""
    model = unwrap(model)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers >= 5.x, older
        if hasattr(type(model), name):
            return bool(getattr(model, name)) and model.training
    return False


def _logits_with_shared_prompts(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    first: torch.Tensor,
    inverse: torch.Tensor,
) -> torch.Tensor:
    """Each distinct prompt runs once; its KV cache is gathered for its rows (differentiably), then
    the completions run on top. Same math as one forward per row. -> [n, T, V]"""
    unique_mask = prompt_mask[first]  # [u, Lp]
    unique_ids = torch.where(unique_mask, prompt_ids[first], 0)  # [u, Lp]
    cache, last_prompt_logits = prefill_prompts(model, unique_ids, unique_mask)  # [u, V]: predicts each first token
    pieces = [last_prompt_logits[inverse].unsqueeze(1)]  # [n, 1, V]
    width = completion_ids.shape[1]
    if width > 1:
        cache.batch_select_indices(inverse)  # [u, ...] -> [n, ...], gradients flow back to the shared prompt
        row_mask = unique_mask[inverse]  # [n, Lp]
        inputs = completion_ids[:, :-1]  # [n, T-1]: token t predicts token t+1
        inputs_mask = completion_mask[:, :-1]  # [n, T-1]
        positions = row_mask.sum(-1, keepdim=True) + torch.arange(width - 1, device=inputs.device)  # [n, T-1]
        pieces.append(
            model(
                input_ids=torch.where(inputs_mask, inputs, 0),
                attention_mask=torch.cat([row_mask, inputs_mask], dim=1),  # [n, Lp+T-1]
                position_ids=positions,
                use_cache=True,
                **cache_kwargs(model, cache),
            ).logits  # [n, T-1, V]
        )
    return torch.cat(pieces, dim=1)  # [n, T, V]


def _completion_logits(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """Logits that predict each completion token (position p predicts token p+1). -> [n, T, V]"""
    _check_scoring_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
    first, inverse = shared_prompts(prompt_ids, prompt_mask)
    if _prefix_sharing_pays(model, first.shape[0], prompt_ids.shape[0]):
        return _logits_with_shared_prompts(model, prompt_ids, prompt_mask, completion_ids, completion_mask, first, inverse)
    width = completion_ids.shape[1]
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # [n, Lp+T]
    # Padding may hold any value (even ids outside the vocabulary); the model never attends to it.
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1).masked_fill(~attention_mask, 0)  # [n, Lp+T]
    kwargs = {}
    if supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = width + 1
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=left_padded_position_ids(attention_mask),
        use_cache=False,
        **kwargs,
    ).logits  # [n, T+1, V] (or [n, Lp+T, V] without logits_to_keep)
    return logits[:, -(width + 1) : -1, :]  # [n, T, V]


RECOMPUTE_ABOVE_LOGITS = 1 << 24  # ~64 MiB of float32 logits: above it the head is recomputed in the backward
_PLAIN_HEADS: dict[type, bool] = {}  # model class -> its logits are the head applied to the last hidden states


def _head_is_plain(model: torch.nn.Module) -> bool:
    """Whether ``logits == output_embeddings(last hidden state)`` exactly for this model class, i.e.
    nothing (soft-capping, scaling) follows the head in its forward; checked once per class on a tiny input."""
    inner = unwrap(model)
    known = _PLAIN_HEADS
    if type(inner) in known:
        return known[type(inner)]
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    plain = False
    if head is not None and hasattr(inner, "set_output_embeddings"):
        device = next(inner.parameters()).device
        ids = torch.arange(1, 4, device=device).unsqueeze(0) % max(2, inner.get_input_embeddings().num_embeddings)
        with torch.no_grad():
            reference = inner(input_ids=ids, use_cache=False).logits
            with _hidden_states_out(inner) as real_head:
                plain = bool(torch.allclose(real_head(inner(input_ids=ids, use_cache=False).logits), reference, atol=1e-5, rtol=1e-4))
    known[type(inner)] = plain
    return plain


@contextlib.contextmanager
def _hidden_states_out(model: torch.nn.Module):
    """Within: the model's forward returns its last hidden states as ``logits`` (the head is set aside
    and yielded), so the caller applies the head chunk by chunk."""
    inner = unwrap(model)
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        inner.set_output_embeddings(head)


def _head_chunk(head: torch.nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float):
    """Log-prob of ``tokens`` and the (detached) entropy from one chunk of hidden states. [m, H] -> ([m], [m])"""
    logits = head(hidden).float() / temperature  # [m, V]
    log_norm = torch.logsumexp(logits, dim=-1)  # [m]
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - log_norm  # [m]
    with torch.no_grad():
        log_p = logits - log_norm.unsqueeze(-1)  # [m, V]
        entropy = -(log_p.exp() * log_p).sum(-1)  # [m]
    return picked, entropy


def _chunked_head(head: torch.nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float,
                  chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies through the head, ``chunk_rows`` positions at a time. With gradients and
    more than ``RECOMPUTE_ABOVE_LOGITS`` logits in all, each chunk is recomputed in the backward
    (torch.utils.checkpoint), so no [n, T, V] tensor is ever kept; below it the saved chunks are
    small and recomputing would only cost time.
    hidden: [n, T, H]; tokens: [n, T] -> ([n, T] float32, [n, T] float32)"""
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # [n*T, H]
    flat_tokens = tokens.reshape(-1)  # [n*T]
    vocab = head.weight.shape[0] if hasattr(head, "weight") else 1
    step = max(16, min(chunk_rows, (1 << 25) // max(1, vocab)))  # at most ~32 M logits at once
    recompute = torch.is_grad_enabled() and hidden.requires_grad and flat_hidden.shape[0] * vocab > RECOMPUTE_ABOVE_LOGITS
    logprobs, entropies = [], []
    for start in range(0, flat_hidden.shape[0], step):
        piece = (flat_hidden[start : start + step], flat_tokens[start : start + step])
        if recompute:
            picked, entropy = torch.utils.checkpoint.checkpoint(_head_chunk, head, *piece, temperature, use_reentrant=False)
        else:
            picked, entropy = _head_chunk(head, *piece, temperature)
        logprobs.append(picked)
        entropies.append(entropy)
    shape = tokens.shape
    if not logprobs:
        zeros = torch.zeros(shape, dtype=torch.float32, device=hidden.device)
        return zeros, zeros
    return torch.cat(logprobs).reshape(shape), torch.cat(entropies).reshape(shape)  # [n, T] each


def _logprobs_and_entropy(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, chunk_rows):
    _check_scoring_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
    tokens = torch.where(completion_mask, completion_ids, torch.zeros_like(completion_ids))  # [n, T]
    if _head_is_plain(model):  # the head runs chunk by chunk: no [n, T, V] logits, in the forward or the backward
        with _hidden_states_out(model) as head:
            hidden = _completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)  # [n, T, H]
        return _chunked_head(head, hidden, tokens, temperature, chunk_rows)
    logits = _completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)  # [n, T, V]
    logprobs = token_logprobs(logits, tokens, temperature, chunk_rows)  # [n, T]
    with torch.no_grad():
        entropy = entropy_from_logits(logits.detach(), temperature, chunk_rows)  # [n, T]
    return logprobs, entropy


def completion_logprobs(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """float32 log-prob of every completion token under ``softmax(logits / temperature)``.

    prompt_ids/prompt_mask: [n, Lp] left-padded; completion_ids/completion_mask: [n, T]
    right-padded -> [n, T]. Padded positions may hold any id; their values are finite but
    meaningless (select them away with the mask). Differentiable; also runs under ``torch.no_grad()``.
    Use the rollout's logprob temperature (1.0 for greedy sampling). The output head runs on
    chunks of positions, so the [n, T, vocabulary] logits never exist at once.
    """
    return _logprobs_and_entropy(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, chunk_rows)[0]


def completion_logprobs_and_entropy(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`completion_logprobs`, plus the entropy (nats) of each predicting distribution,
    from the same forward. The entropy is detached (a metric). -> ([n, T], [n, T])"""
    return _logprobs_and_entropy(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, chunk_rows)
