"""Tiny, local, real Hugging Face models and tokenizers for the test-suite (no hub access needed).

``save_tiny_model(dir, arch="llama")`` writes a randomly initialised ``LlamaForCausalLM`` or
``Qwen2ForCausalLM`` (a few thousand parameters) plus a character-level tokenizer into ``dir``, in
the standard HF layout, so every loader in the project can be exercised exactly as with a real
checkpoint. Everything is seeded: the same arguments always give the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

Arch = Literal["llama", "qwen2"]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Role markers for the test chat template; single tokens so chat prompts stay short.
USER, ASSISTANT = "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, USER, ASSISTANT]
CHARACTERS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-*/=?.,:;!()'\"\n")

# A minimal chat template in the usual Jinja form: role marker, content, EOS; then the assistant
# marker when a generation prompt is requested.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>' }}{% else %}{{ '<|assistant|>' }}{% endif %}"
    "{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_char_tokenizer(
    *, with_pad: bool = True, chat_template: str | None = CHAT_TEMPLATE
) -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer (one token per character) that prepends BOS.

    ``with_pad=False`` builds one without a pad token (the pad token id still exists in the
    vocabulary, it is just not declared), to test the loaders' EOS fallback.
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD if with_pad else None,
        additional_special_tokens=[USER, ASSISTANT],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(
    arch: Arch,
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 256,
    initializer_range: float = 0.1,
) -> LlamaConfig | Qwen2Config:
    """The config of a tiny model of ``arch`` sized to ``tokenizer``'s vocabulary.

    ``initializer_range`` is larger than the usual 0.02 so that random models have peaked
    next-token distributions (greedy decoding has no near-ties that float noise could flip).
    """
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        tie_word_embeddings=False,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"arch must be 'llama' or 'qwen2', got {arch!r}")


def build_tiny_model(
    arch: Arch, tokenizer: PreTrainedTokenizerFast, *, seed: int = 0, **config_kwargs
) -> PreTrainedModel:
    """A randomly initialised (seeded) tiny causal LM of ``arch`` in float32 and eval mode."""
    config = tiny_config(arch, tokenizer, **config_kwargs)
    model_class = LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval()


def save_tiny_model(
    directory: str | Path,
    arch: Arch = "llama",
    *,
    seed: int = 0,
    with_pad: bool = True,
    chat_template: str | None = CHAT_TEMPLATE,
    generation_eos_ids: list[int] | None = None,
    **config_kwargs,
) -> Path:
    """Write a tiny random model of ``arch`` and its char tokenizer to ``directory``; return it.

    ``generation_eos_ids`` goes into ``generation_config.json`` (a model may declare several EOS
    ids there); by default only the tokenizer's EOS.
    """
    directory = Path(directory)
    tokenizer = build_char_tokenizer(with_pad=with_pad, chat_template=chat_template)
    model = build_tiny_model(arch, tokenizer, seed=seed, **config_kwargs)
    eos_ids = generation_eos_ids if generation_eos_ids is not None else tokenizer.eos_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of a single-token string (a character or a special token) in the char tokenizer."""
    index = tokenizer.convert_tokens_to_ids(token)
    if index is None or index == tokenizer.unk_token_id:
        raise ValueError(f"{token!r} is not a single token of the char tokenizer")
    return index
