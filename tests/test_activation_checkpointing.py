"""model.gradient_checkpointing=true really recomputes the decoder layers in the backward, with the
policy in eval mode (transformers checkpoints only layers in training mode), and changes no number."""

from __future__ import annotations

import torch

from cohort.models.scoring import completion_logprobs
from cohort.training.trainer import checkpoint_layers


def _layer_calls(model) -> list[int]:
    calls: list[int] = []
    for layer in model.model.layers:
        layer.mlp.register_forward_pre_hook(lambda *_: calls.append(1))  # a pre-hook: the recompute may stop early
    return calls


def _logprobs_and_grads(model, calls: list[int]):
    """Log-probs, gradients, and how many layer forwards the backward ran."""
    prompt = torch.tensor([[5, 6, 7], [5, 6, 7]])
    completion = torch.tensor([[8, 9, 10, 11], [12, 13, 14, 15]])
    ones = torch.ones_like
    logprobs = completion_logprobs(model, prompt, ones(prompt, dtype=torch.bool), completion, ones(completion, dtype=torch.bool))
    model.zero_grad()
    before = len(calls)
    logprobs.sum().backward()
    return logprobs.detach(), [p.grad.clone() for p in model.parameters()], len(calls) - before


def test_checkpointed_layers_run_again_in_the_backward_and_give_the_same_gradient(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    checkpointed = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    checkpoint_layers(checkpointed)
    assert not checkpointed.training and not checkpointed.model.layers[0].mlp.training  # no dropout anywhere
    plain_calls, checkpointed_calls = _layer_calls(plain), _layer_calls(checkpointed)
    expected, expected_grads, plain_recomputed = _logprobs_and_grads(plain, plain_calls)
    logprobs, grads, recomputed = _logprobs_and_grads(checkpointed, checkpointed_calls)
    assert plain_recomputed == 0 and recomputed >= len(plain.model.layers)  # the backward ran each layer again
    torch.testing.assert_close(logprobs, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
