"""PPO's value model V_psi: a causal LM's backbone with a scalar head, one value per completion token.

It is a Hugging Face token-classification model with one label (``AutoModelForTokenClassification``,
``num_labels=1``, no bias), so it saves and loads in the standard format. It starts either from the
policy's weights with a zero head (every value 0 at first) or from a reward model's weights and head
(a sequence-classification model with one label: its backbone and ``score`` head load as they are).

The value of completion token t is read at the position that predicts it (the previous token), i.e.
V(s_t) with s_t = (q, o_<t), aligned exactly with the policy's per-token log-probs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from cohort.models.loading import (
    own_storage,
    resolve_device,
    resolve_dtype,
    resolve_model_source,
)
from cohort.models.scoring import left_padded_position_ids


class ValueModelError(ValueError):
    """The value model cannot be built from the given directory."""


def load_value_model(
    source: str | os.PathLike,
    *,
    from_policy: bool,
    dtype: str | torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A trainable value model (eval mode: no dropout) from a policy (zero head) or a reward / value model."""
    location = resolve_model_source(source, what="model")
    from transformers import (  # on first use: loading transformers costs ~1 s
        AutoConfig,
        AutoModelForTokenClassification,
    )

    config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    labels = getattr(config, "num_labels", 1) if not from_policy else 1
    if labels != 1:
        raise ValueModelError(f"ppo.value_init={os.fspath(source)!r} has {labels} output labels; a value model needs a single scalar head")
    config.num_labels, config.classifier_dropout, config.token_classification_bias = 1, 0.0, False
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            location, config=config, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
        )
    except ValueError as err:
        raise ValueModelError(f"cannot build a value model from {os.fspath(source)!r}: {err}") from None
    if from_policy:
        with torch.no_grad():
            model.score.weight.zero_()
    model.to(resolve_device(device))
    own_storage(model)
    model.eval()
    model.requires_grad_(True)
    return model


def completion_values(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """V(s_t) for every completion token, float32; left-padded prompts, right-padded completions.

    prompt_ids/prompt_mask: [n, Lp]; completion_ids/completion_mask: [n, T] -> [n, T]
    """
    width = completion_ids.shape[1]
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # [n, Lp+T]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1).masked_fill(~attention_mask, 0)  # [n, Lp+T]
    scores = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=left_padded_position_ids(attention_mask)
    ).logits[..., 0]  # [n, Lp+T]
    return scores[:, -(width + 1) : -1].float()  # [n, T]: position p holds V of the state that predicts token p+1
