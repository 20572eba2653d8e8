"""An endless, seeded stream of dataset row indices whose position can be saved and restored."""

from __future__ import annotations

import torch


class PromptSampler:
    """Yields row indices epoch after epoch, each epoch a fresh seeded permutation (or in order).

    The state is just ``(epoch, position)``, so a resumed run draws exactly the prompts the
    uninterrupted run would have drawn.
    """

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True) -> None:
        if num_rows < 1:
            raise ValueError(f"the training split is empty (num_rows={num_rows})")
        self.num_rows = num_rows
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_rows))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_rows, generator=generator).tolist()

    def next_indices(self, count: int) -> list[int]:
        """The next ``count`` row indices, crossing into the next epoch when one runs out."""
        indices = []
        while len(indices) < count:
            if self.position == self.num_rows:
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order(self.epoch)
            take = min(count - len(indices), self.num_rows - self.position)
            indices.extend(self._order[self.position : self.position + take])
            self.position += take
        return indices

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "num_rows": self.num_rows, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_rows"] != self.num_rows or state["seed"] != self.seed:
            raise ValueError(
                f"the checkpoint's data position belongs to a dataset of {state['num_rows']} rows with seed "
                f"{state['seed']}, but this run has {self.num_rows} rows and seed {self.seed}"
            )
        self.epoch = state["epoch"]
        self.position = state["position"]
        self._order = self._epoch_order(self.epoch)
