"""vLLM as the rollout engine, in this process beside the trainer (colocated, as TRL's
``vllm_mode="colocate"``): paged attention, continuous batching and prefix caching for the rollout,
the trainer's own forward for the loss.

The engine starts from the policy's model directory and then follows the policy: before each
generation it copies the policy's weights again (LoRA adapters merged into their base weights)
when they may have changed since the last copy (an optimizer step anywhere in the process, or a
parameter replaced or changed in place), then resets the prefix cache (its KV blocks belong to
the old weights). The sampling contract is the native engine's: the same :class:`SamplingParams`, EOS ids
and stop strings ending a completion at the token that completes them (kept), the same finish
reasons, sampling log-probs under ``softmax(logits / T)``; the random numbers are vLLM's, seeded
per prompt from the run's generator, so a rank's share of a batch samples as the whole batch would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from cohort.distributed import before_stop
from cohort.models.lora import is_adapted, merged_weights
from cohort.rollout.batch import Rollout, rollout_from_tokens
from cohort.rollout.sampling import SamplingParams
from cohort.rollout.vllm_process import (
    process_state_kept,
    quiet_defaults,
    start_up_output_held,
)

INSTALL_HINT = ("vLLM is not installed in this environment: `make vllm` builds .venv-vllm (vLLM's CPU build with "
                "the transformers it pins), then run `.venv-vllm/bin/cohort train ... rollout.engine=vllm`")
WORKER_EXTENSION = "cohort.rollout.vllm_worker.WeightLoader"
MAX_SEQUENCES = 256  # sequences vLLM decodes at once (its max_num_seqs)


def vllm_available() -> bool:
    """Whether ``import vllm`` would find the package (without importing it: that takes seconds)."""
    from importlib.util import find_spec

    return find_spec("vllm") is not None


def _text_config(model_path: str, trust_remote_code: bool):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code).get_text_config()


def _head_size(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def cpu_kv_cache_bytes(config, dtype: torch.dtype, memory_fraction: float) -> int:
    """The KV cache on CPU: room for MAX_SEQUENCES sequences of the model's full length (so vLLM
    never has to preempt a running sequence), at most ``memory_fraction`` of the RAM. Unlike a
    GPU's, this memory is the trainer's too: a fixed share of it would be taken whatever the model."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * _head_size(config) * torch.empty((), dtype=dtype).element_size()
    needed = MAX_SEQUENCES * config.max_position_embeddings * per_token
    return int(min(needed, memory_fraction * _total_ram_bytes()))


def check_head_size(model_path: str, device: torch.device, trust_remote_code: bool = False, config=None) -> None:
    """vLLM's CPU attention has kernels for some head sizes only: say so before a long start-up fails."""
    if device.type != "cpu":
        return
    quiet_defaults(device)
    with start_up_output_held(), process_state_kept():  # the first import of vllm prints notes
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    head = _head_size(config or _text_config(model_path, trust_remote_code))
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head not in supported:
        raise ValueError(f"rollout.engine=vllm: {model_path} has attention heads of size {head}; vLLM's CPU build "
                         f"supports {', '.join(map(str, supported))}; use rollout.engine=native for this model")


class VllmEngine:
    """One in-process ``vllm.LLM`` for one model architecture; see the module docstring."""

    name = "vllm"
    _shared: ClassVar[dict[tuple, VllmEngine]] = {}

    @classmethod
    def shared(cls, model_path: str, **options: Any) -> VllmEngine:
        """The process's engine for ``model_path`` and these options, started on first use. One engine
        lives at a time (each holds its KV cache): asking for another shuts the previous one down."""
        key = (model_path, *sorted((k, str(v)) for k, v in options.items()))
        if key not in cls._shared:
            cls.shutdown_all()
            cls._shared = {key: cls(model_path, **options)}
        return cls._shared[key]

    def __init__(self, model_path: str, *, dtype: torch.dtype, device: torch.device, memory_fraction: float = 0.3,
                 sleep: bool = True, trust_remote_code: bool = False) -> None:
        if not vllm_available():
            raise ModuleNotFoundError(INSTALL_HINT)
        quiet_defaults(device)
        config = _text_config(model_path, trust_remote_code)
        check_head_size(model_path, device, trust_remote_code, config)
        self.device = device
        self.sleeps = sleep and device.type == "cuda"  # vLLM's CPU build cannot sleep
        memory = ({"gpu_memory_utilization": memory_fraction} if device.type == "cuda"
                  else {"kv_cache_memory_bytes": cpu_kv_cache_bytes(config, dtype, memory_fraction)})
        launcher = _launcher()
        with process_state_kept(), start_up_output_held():
            from vllm import LLM

            self.llm = LLM(
                model=model_path, tokenizer=model_path, dtype=dtype, seed=0, trust_remote_code=trust_remote_code,
                enable_prefix_caching=True, enforce_eager=True, logprobs_mode="processed_logprobs",
                worker_extension_cls=WORKER_EXTENSION, enable_sleep_mode=self.sleeps, max_num_seqs=MAX_SEQUENCES,
                **memory, **launcher,
            )
        if launcher:
            before_stop(VllmEngine.shutdown_all)  # vLLM's shutdown destroys torchrun's group: it goes first
        self._copied: tuple | None = None  # the weight versions last copied into the engine
        self._asleep = False

    @classmethod
    def shutdown_all(cls) -> None:
        """Stop the process's engine, if one was started."""
        for engine in cls._shared.values():
            engine.shutdown()
        cls._shared = {}

    def shutdown(self) -> None:
        """Stop the engine and free its memory."""
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        import gc

        gc.collect()

    # --- weights ----------------------------------------------------------------------------------

    def follow(self, model: torch.nn.Module) -> bool:
        """Copy ``model``'s weights into the engine when they changed since the last copy; True if copied.
        Under FSDP2 the copy gathers the shards: every rank calls it at the same point."""
        versions = weight_versions(model)
        if versions == self._copied and not self._asleep:
            return False
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("cohort_load_weights", args=(list(generation_weights(model)),))
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        self._copied = versions
        return True

    def sleep(self) -> None:
        """Before the update (the trainer calls it): on a GPU, release the KV cache and the engine's
        weights while the trainer needs the memory; the next generation copies the weights back in.
        A no-op on CPU, where vLLM cannot sleep."""
        if self.sleeps and not self._asleep:
            self.llm.sleep(level=2)
            self._asleep = True

    # --- generation -------------------------------------------------------------------------------

    def generate(self, model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], group_size: int,
                 params: SamplingParams, *, pad_token_id: int, generator: torch.Generator, tokenizer: Any = None,
                 shard: tuple[int, int] | None = None) -> Rollout:
        """``group_size`` completions of each prompt under ``model``'s current weights (see the module docstring)."""
        from cohort.rollout.engine import check_request  # the native engine's checks: a request fails alike

        check_request(model, prompt_ids, group_size, params, pad_token_id, generator, tokenizer, model_device(model))
        self.follow(model)
        first_prompt = 0 if shard is None else shard[0] // group_size
        base_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))  # the run's generator decides the seeds
        copies = group_size if params.greedy else 1  # vLLM takes n > 1 only when sampling: G requests of n = 1
        requests = [{"prompt_token_ids": [int(t) for t in prompt]} for prompt in prompt_ids for _ in range(copies)]
        sampling = [vllm_sampling_params(params, group_size // copies, base_seed + first_prompt + index)
                    for index in range(len(prompt_ids)) for _ in range(copies)]
        with process_state_kept():
            outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        return outputs_to_rollout(outputs, prompt_ids, group_size, params, pad_token_id, model_device(model))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


_optimizer_steps = 0


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


# Every torch optimizer's step, fused AdamW included (its kernel leaves the version counters alone).
register_optimizer_step_post_hook(_count_optimizer_step)


def weight_versions(model: torch.nn.Module) -> tuple:
    """A value that changes whenever the weights may have: after any optimizer step in the process,
    and in one process also when a parameter is replaced or changed in place otherwise
    (``load_state_dict``): the model's identity and every parameter's storage and version counter.
    Under torchrun only the step count and identity count: FSDP2 swaps parameter storage on every
    gather, and the ranks must agree on whether to copy (the copy is a collective)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        return (_optimizer_steps, id(model))
    return (_optimizer_steps, id(model), *((p.data_ptr(), p._version) for p in model.parameters()))


def generation_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights vLLM generates with, named as the Hugging Face checkpoint names them: the model's
    own, or with LoRA the base weights plus each adapter's delta (the model itself unchanged)."""
    if is_adapted(model):
        yield from merged_weights(model)
        return
    for name, tensor in model.state_dict().items():
        yield name, _whole(tensor.detach())


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """An FSDP2 shard gathered into the whole tensor (a collective: every rank copies at once)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def vllm_sampling_params(params: SamplingParams, group_size: int, seed: int):
    """vLLM's SamplingParams for cohort's: EOS ids are the only stop tokens (vLLM's own EOS is not
    added: ``ignore_eos``), stop strings end a completion with their last token kept."""
    from vllm import SamplingParams as VllmParams

    return VllmParams(
        n=group_size,
        temperature=0.0 if params.greedy else params.temperature,
        top_p=params.top_p,
        top_k=params.top_k or 0,
        max_tokens=params.max_new_tokens,
        stop_token_ids=list(params.eos_token_ids),
        ignore_eos=True,
        stop=list(params.stop_strings) or None,
        include_stop_str_in_output=True,
        logprobs=0,
        seed=None if params.greedy else seed,
        skip_special_tokens=False,
    )


def _finish_reason(completion) -> str:
    if completion.finish_reason == "length":
        return "length"
    if completion.finish_reason != "stop":
        raise RuntimeError(f"vLLM ended a completion with finish_reason={completion.finish_reason!r}")
    return "stop" if isinstance(completion.stop_reason, str) else "eos"


def outputs_to_rollout(outputs, prompt_ids: Sequence[Sequence[int]], group_size: int, params: SamplingParams,
                       pad_token_id: int, device: torch.device) -> Rollout:
    """vLLM's RequestOutputs (one per request, in prompt order) as a group-contiguous Rollout."""
    completions = [c for output in outputs for c in sorted(output.outputs, key=lambda c: c.index)]
    if len(completions) != len(prompt_ids) * group_size:
        raise RuntimeError(f"vLLM returned {len(completions)} completions for {len(prompt_ids)} prompts x {group_size}")
    tokens = [list(c.token_ids) for c in completions]
    rollout = rollout_from_tokens(prompt_ids, tokens, group_size, pad_token_id,
                                  finish_reasons=[_finish_reason(c) for c in completions], device=device)
    logprobs = [torch.tensor([step[t].logprob for step, t in zip(c.logprobs, ids)], dtype=torch.float32)
                for c, ids in zip(completions, tokens)]
    padded = torch.nn.utils.rnn.pad_sequence(logprobs, batch_first=True, padding_value=0.0)  # [N, T]
    return replace(rollout, sampling_logprobs=padded.to(device), logprob_temperature=params.logprob_temperature,
                   sampled_by_policy=False)


def _launcher() -> dict[str, str]:
    """Under torchrun each rank runs its own engine on its own share of the prompts: vLLM joins the
    process group torchrun made ("external_launcher", as TRL's colocate mode) instead of making one."""
    import torch.distributed as dist

    return {"distributed_executor_backend": "external_launcher"} if dist.is_initialized() and dist.get_world_size() > 1 else {}


def _total_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
