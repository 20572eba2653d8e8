"""A KV cache layer that grows in blocks, so the decode loop does not copy the whole cache every token.

transformers' ``DynamicLayer`` appends each new token's keys and values with ``torch.cat``: every
decode step copies the layer's entire cache, so a completion of T tokens costs O(T^2) bytes of
copying per layer (on CPU at 512-token budgets, half of the rollout's time). ``BlockGrowingLayer``
keeps a buffer with room for ``block`` more positions, writes each token in place and hands the
attention a view of the filled part; the buffer is reallocated (one copy) only every ``block``
tokens. Attention still spans only the positions filled so far (unlike a static cache sized for
the whole budget), and the numbers are the same: the keys and values are the same tensors' values.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import (
    DynamicLayer,  # transformers >= 4.56 (pyproject): caches are lists of layers
)

DEFAULT_BLOCK = 64


class BlockGrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` are views [B, H, length, D] of a larger buffer."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, block: int = DEFAULT_BLOCK) -> None:
        super().__init__()
        self.block = block
        self.device = keys.device
        self.is_initialized = True
        self.length = keys.shape[-2]
        self._keys = self._with_room(keys, self.length + block)  # [B, H, capacity, D]
        self._values = self._with_room(values, self.length + block)
        self._refresh_views()

    @staticmethod
    def _with_room(filled: torch.Tensor, capacity: int) -> torch.Tensor:
        """A new [B, H, capacity, D] buffer whose first positions hold ``filled``."""
        batch, heads, length, dim = filled.shape
        buffer = filled.new_empty((batch, heads, capacity, dim))
        buffer[:, :, :length] = filled
        return buffer

    def _refresh_views(self) -> None:
        self.keys = self._keys[:, :, : self.length]  # [B, H, length, D], a view
        self.values = self._values[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions [B, H, q, D] in place (growing the buffer by a block when full)."""
        new = key_states.shape[-2]
        if self._keys is None:  # after reset(): start again from these positions
            self.__init__(key_states, value_states, self.block)
            return self.keys, self.values
        if self.length + new > self._keys.shape[-2]:
            capacity = self.length + new + self.block
            self._keys = self._with_room(self.keys, capacity)
            self._values = self._with_room(self.values, capacity)
        self._keys[:, :, self.length : self.length + new] = key_states
        self._values[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._refresh_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._keys = self._keys.repeat_interleave(repeats, dim=0)
        self._values = self._values.repeat_interleave(repeats, dim=0)
        self._refresh_views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys = self._keys[indices]
        self._values = self._values[indices]
        self._refresh_views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self._keys.device))

    def offload(self) -> None:
        self._keys, self._values = self._keys.to("cpu", non_blocking=True), self._values.to("cpu", non_blocking=True)
        self._refresh_views()

    def prefetch(self) -> None:
        if self._keys.device != self.device:
            self._keys = self._keys.to(self.device, non_blocking=True)
            self._values = self._values.to(self.device, non_blocking=True)
            self._refresh_views()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)  # checks the argument and crops the views
        self.length = self.keys.shape[-2]

    def reset(self) -> None:
        super().reset()
        self._keys = self._values = None
        self.length = 0


def grow_in_blocks(cache, block: int = DEFAULT_BLOCK) -> int:
    """Turn a filled cache's plain ``DynamicLayer``s into :class:`BlockGrowingLayer`s, in place.

    Sliding-window and other layer kinds, and caches that offload to the CPU, are left as they are.
    Inference only: the in-place writes would trip autograd's checks. -> how many layers were converted.
    """
    layers = getattr(cache, "layers", None)
    if layers is None or getattr(cache, "offloading", False):
        return 0  # an offloading cache moves layer.keys between devices; it keeps its own layers
    converted = 0
    for index, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.dim() == 4:
            layers[index] = BlockGrowingLayer(layer.keys, layer.values, block)
            converted += 1
    return converted
