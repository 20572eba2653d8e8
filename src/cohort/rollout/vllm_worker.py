"""The part of the vLLM engine that runs inside vLLM's worker (``LLM(worker_extension_cls=...)``
mixes :class:`WeightLoader` into it). Imported by vLLM by its dotted path, never by cohort.

The engine runs in-process, so ``collective_rpc("cohort_load_weights", args=(weights,))`` hands the
policy's tensors over by reference; the model runner's in-place reload copies them into vLLM's
layout (q/k/v and gate/up stacked; on CPU the linear weights re-packed for its GEMM kernels).
"""

from __future__ import annotations

import torch


class WeightLoader:
    """Loads Hugging Face-named weights into the running model, in place."""

    def cohort_load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> int:
        """Load ``weights`` (checkpoint names, any float dtype); returns how many were given."""
        runner = self.model_runner
        runner.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
        if getattr(runner.model_config.hf_config, "tie_word_embeddings", False):
            self._retie_output_head(runner.get_model())
        return len(weights)

    def _retie_output_head(self, model: torch.nn.Module) -> None:
        """The reload may give the embedding a new Parameter: point a tied output head at it again
        (and, on CPU, re-pack it for the GEMM kernel, as loading does)."""
        from vllm.model_executor.layers.vocab_parallel_embedding import (
            ParallelLMHead,
            VocabParallelEmbedding,
        )

        embedding = next(m for m in model.modules() if type(m) is VocabParallelEmbedding)
        for module in model.modules():
            if isinstance(module, ParallelLMHead):
                module.weight = embedding.weight
                if module.weight.device.type == "cpu":
                    from vllm.model_executor.layers.utils import (
                        dispatch_cpu_unquantized_gemm,
                    )

                    dispatch_cpu_unquantized_gemm(module, remove_weight=False)
