"""Prompts as the model sees them: plain text, or messages through the tokenizer's chat template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from cohort.data.tasks import format_prompt

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

Message = Mapping[str, str]
Prompt = Union[str, Sequence[Message]]



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
            "(set model.chat_template=false for plain-text prompts, or give model.path a tokenizer with a chat template)"
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


@dataclass
class PromptRenderer:
    """Row -> prompt (the data template, optionally as a chat with a system message) -> token ids.

    Training, offline sampling, step labelling and evaluation all render prompts through one of
    these, so a prompt reads the same everywhere.
    """

    tokenizer: PreTrainedTokenizerBase
    template: str
    prompt_column: str
    chat: bool = False
    system_prompt: str | None = None

    def prompt(self, row: dict[str, Any]) -> Any:
        prompt = format_prompt(row, self.template, self.prompt_column)
        if self.chat and self.system_prompt and isinstance(prompt, str):
            return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}]
        return prompt

    def encode(self, prompts: list[Any]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts, chat=self.chat)


def task_renderer(tokenizer: PreTrainedTokenizerBase, task: Any, *, template: str, chat: bool,
                  system_prompt: str | None) -> PromptRenderer:
    """The renderer of ``task``'s rows; a template that does not fit the rows fails now, not mid-run."""
    renderer = PromptRenderer(tokenizer, template, task.prompt_column, chat, system_prompt)
    renderer.encode([renderer.prompt(task.train[0])])  # a missing chat template fails here, before the model loads
    return renderer
