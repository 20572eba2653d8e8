"""Samples of the initial policy, drawn once and cached in the run directory (RFT, DPO pairs).

``RUN_DIR/offline/samples.jsonl`` holds one record per sample (prompt index, completion ids,
rewards, correctness) and ``meta.json`` what they were drawn with and how far the draw got. Prompts
are drawn in chunks, each with its own seeded generator, so an interrupted draw continues where it
stopped and gives exactly the samples an uninterrupted one would. A cache drawn with other settings
is refused rather than silently reused.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch

from cohort.data.tasks import row_columns, rows_at
from cohort.records import dumps
from cohort.rewards import RewardScores
from cohort.sources.base import SourcePieces, StepTimer, sample_and_score
from cohort.sources.scored_batch import ScoredBatch
from cohort.sources.stream import (
    ExampleStream,
    MethodDataError,
    as_float_tensor,
    default_batch_size,
)

OFFLINE_DIR = "offline"


class SamplingStopped(Exception):
    """The user stopped the run while offline samples were drawn; what was drawn is kept."""


def _write_json_atomic(path: Path, value: Any) -> None:
    temporary = path.with_name(f".tmp-{path.name}")
    temporary.write_text(dumps(value, indent=1))
    os.replace(temporary, path)


def _complete_lines(path: Path) -> list[str]:
    """The lines of ``path`` that are whole JSON records (a crash may cut the last one)."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        lines.append(line)
    return lines


class OfflineSamples:
    """K samples per training prompt from the initial policy, drawn once (resumably) and cached."""

    def __init__(self, pieces: SourcePieces) -> None:
        config = pieces.config
        self.pieces = pieces
        self.directory = pieces.run_dir.root / OFFLINE_DIR
        self.per_prompt = config.offline.samples_per_prompt
        self.chunk_size = config.rollout.prompts_per_step
        order = torch.randperm(len(pieces.task.train), generator=torch.Generator().manual_seed(config.train.seed)).tolist()
        self.prompt_indices = sorted(order[: config.offline.max_prompts]) if config.offline.max_prompts else list(range(len(order)))
        self._records: list[dict[str, Any]] | None = None

    def settings(self) -> dict[str, Any]:
        """What the samples depend on; a cache with other settings is not reused."""
        c = self.pieces.config
        return {
            "model": c.model.path, "task": c.data.task, "seed": c.train.seed, "samples_per_prompt": self.per_prompt,
            "prompts": len(self.prompt_indices), "chunk_size": self.chunk_size, "max_new_tokens": c.rollout.max_new_tokens,
            "temperature": c.rollout.temperature, "top_p": c.rollout.top_p, "top_k": c.rollout.top_k,
            "rewards": sorted(r.name for r in self.pieces.scoring.rewards),
        }

    def _progress(self) -> int:
        """Chunks already drawn (0 for a fresh cache); refuses a cache drawn with other settings."""
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            return 0
        meta = json.loads(meta_path.read_text())
        if meta["settings"] != self.settings():
            changed = sorted(k for k in self.settings() if meta["settings"].get(k) != self.settings()[k])
            raise MethodDataError(f"{self.directory} holds offline samples drawn with other settings ({', '.join(changed)}); "
                                  "use another train.out_dir or train.overwrite=true")
        return int(meta["chunks_done"])

    def records(self) -> list[dict[str, Any]]:
        """All samples, drawing those not yet in the cache (the policy must still be the initial one).

        Says the cost first; a stop request (Ctrl-C) between chunks keeps what was drawn (a rerun
        or a resume continues from there) and raises SamplingStopped."""
        if self._records is None:
            world = self.pieces.world
            samples = self.directory / "samples.jsonl"
            if world.is_main:
                self.directory.mkdir(parents=True, exist_ok=True)
                done = self._progress()
                kept = [line for line in _complete_lines(samples) if json.loads(line)["chunk"] < done]
                samples.write_text("".join(line + "\n" for line in kept))  # drop a chunk cut by a crash
            done = world.broadcast(done if world.is_main else None)
            starts = list(range(0, len(self.prompt_indices), self.chunk_size))
            if done < len(starts):
                self._announce(done * self.chunk_size)
                self._draw(starts, done, samples)
            self._records = [json.loads(line) for line in samples.read_text().splitlines()]
        return self._records

    def _announce(self, drawn: int) -> None:
        prompts = len(self.prompt_indices)
        limit = "" if self.pieces.config.offline.max_prompts else "; offline.max_prompts=N draws for N prompts only"
        again = f", {drawn} already drawn" if drawn else ""
        self.pieces.info(f"offline samples of the initial policy: {prompts} prompts x {self.per_prompt} = "
                         f"{prompts * self.per_prompt} completions{again} (kept in {self.directory}; Ctrl-C stops and keeps "
                         f"them{limit})")

    def _draw(self, starts: list[int], done: int, samples: Path) -> None:
        total = len(self.prompt_indices)
        with self.pieces.progress("offline samples") as update:
            for chunk, start in enumerate(starts):
                if chunk < done:
                    continue
                if self.pieces.world.sum(int(self.pieces.stop_requested())) > 0:
                    raise SamplingStopped(f"stopped while drawing offline samples, after {start}/{total} prompts "
                                          f"(kept in {self.directory}; running the same command again continues)")
                self._draw_chunk(chunk, self.prompt_indices[start : start + self.chunk_size], samples)
                update(min(total, start + self.chunk_size), total)

    def _draw_chunk(self, chunk: int, indices: list[int], samples: Path) -> None:
        """Draw one chunk's samples (each rank a contiguous block of its prompts) and append them."""
        pieces, world = self.pieces, self.pieces.world
        block = _block(len(indices), world.rank, world.size)
        device = pieces.sampler.generator.device
        generator = torch.Generator(device=device).manual_seed(pieces.config.train.seed * 1_000_003 + 7919 * (chunk + 1))
        mine = indices[block]
        lines: list[str] = []
        if mine:
            shard = (block.start * self.per_prompt, len(indices) * self.per_prompt)
            batch = sample_and_score(pieces, rows_at(pieces.task.train, mine), self.per_prompt, StepTimer(), generator, shard)
            lines = [dumps(record) for record in self._as_records(chunk, mine, batch)]
        lines = [line for part in world.gather(lines) for line in part]
        if world.is_main:
            with samples.open("a", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in lines))
                handle.flush()
                os.fsync(handle.fileno())
            _write_json_atomic(self.directory / "meta.json", {"settings": self.settings(), "chunks_done": chunk + 1})
        world.barrier()

    def _as_records(self, chunk: int, indices: list[int], batch: ScoredBatch) -> list[dict[str, Any]]:
        """One record per sample of ``batch`` (drawn for the prompts ``indices``)."""
        records = []
        for row, completion in enumerate(batch.rollout.completion_token_lists()):
            records.append({
                "chunk": chunk,
                "prompt_index": indices[row // self.per_prompt],
                "completion_ids": completion,
                "reward": float(batch.scores.total[row]),
                "rewards": {name: float(v[row]) for name, v in batch.scores.per_function.items()},
                "correct": None if batch.correct is None else bool(batch.correct[row]),
                "finish_reason": batch.rollout.finish_reasons[row],
            })
        return records


def _block(count: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous block of ``count`` items split as evenly as possible over ``size`` ranks."""
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _records_batch(stream: ExampleStream, records: list[dict[str, Any]], group_size: int) -> ScoredBatch:
    """A ScoredBatch of stored samples, ``group_size`` consecutive records per prompt."""
    pieces = stream.pieces
    rows = rows_at(pieces.task.train, [r["prompt_index"] for r in records[::group_size]])
    prompts, rollout = stream.rollout(rows, [r["completion_ids"] for r in records], group_size)
    names = list(records[0]["rewards"])
    scores = RewardScores(
        total=as_float_tensor([r["reward"] for r in records]),
        per_function={name: as_float_tensor([r["rewards"].get(name) for r in records]) for name in names},
    )
    correct = torch.tensor([bool(r["correct"]) for r in records]) if records[0]["correct"] is not None else None
    completions = rollout.decode_completions(pieces.sampler.tokenizer)
    return ScoredBatch(rollout, prompts, row_columns(rows), completions, scores, sampled_groups=len(rows), correct=correct)


class RejectionSampledRows(ExampleStream):
    """RFT (DeepSeekMath §5.2.1, A.1.2): the correct samples of the initial policy, deduplicated per prompt."""

    def __init__(self, pieces: SourcePieces, store: OfflineSamples) -> None:
        super().__init__(pieces, default_batch_size(pieces))
        self.store = store
        self.kept: list[dict[str, Any]] = []
        self.drawn = 0

    def load(self) -> int:
        records = self.store.records()
        self.drawn = len(records)
        seen: set[tuple[int, tuple[int, ...]]] = set()
        for record in records:
            key = (record["prompt_index"], tuple(record["completion_ids"]))
            if record["correct"] and key not in seen:
                seen.add(key)
                self.kept.append(record)
        if not self.kept:
            raise MethodDataError(f"rft: none of the {self.drawn} samples of the initial policy is correct, so there is "
                                  "nothing to fine-tune on (raise offline.samples_per_prompt, or check the reward)")
        return len(self.kept)

    def build(self, indices: list[int], timer: StepTimer) -> ScoredBatch:
        batch = _records_batch(self, [self.kept[i] for i in indices], 1)
        batch.extras = {"dataset_size": float(len(self.kept)), "kept_frac": len(self.kept) / max(1, self.drawn)}
        return batch


class SamplePairs(ExampleStream):
    """DPO pairs as DeepSeekMath builds them (A.1.4): a correct and an incorrect sample of the same
    prompt from the initial policy; up to ``pairs_per_prompt`` distinct pairs per prompt."""

    def __init__(self, pieces: SourcePieces, store: OfflineSamples, *, pairs_per_prompt: int) -> None:
        super().__init__(pieces, default_batch_size(pieces, per_example=2))
        self.store = store
        self.pairs_per_prompt = pairs_per_prompt
        self.pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def load(self) -> int:
        by_prompt: dict[int, tuple[dict, dict]] = {}
        for record in self.store.records():
            correct, wrong = by_prompt.setdefault(record["prompt_index"], ({}, {}))
            (correct if record["correct"] else wrong).setdefault(tuple(record["completion_ids"]), record)
        limit = self.pairs_per_prompt
        for prompt_index, (correct, wrong) in sorted(by_prompt.items()):
            combos = [(c, w) for c in correct.values() for w in wrong.values()]
            random.Random(self.pieces.config.train.seed * 1_000_003 + prompt_index).shuffle(combos)
            self.pairs.extend(combos[:limit])
        if not self.pairs:
            raise MethodDataError(f"dpo: no prompt has both a correct and an incorrect sample among the initial policy's "
                                  f"{len(self.store.records())} samples, so no pair can be built")
        return len(self.pairs)

    def build(self, indices: list[int], timer: StepTimer) -> ScoredBatch:
        records = [record for i in indices for record in self.pairs[i]]
        batch = _records_batch(self, records, 2)
        batch.extras = {"dataset_pairs": float(len(self.pairs))}
        return batch
