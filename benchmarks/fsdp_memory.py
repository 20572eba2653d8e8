#!/usr/bin/env python
"""Peak memory per rank: one process against torchrun ranks under DDP and FSDP2 (gloo on CPU).

Why: docs/running.md says what FSDP2 saves per rank; this measures it instead of asserting it.
What: for each model shape (Qwen2-style, random weights built from a config: no download), each
``algorithm.beta`` and with/without ``model.gradient_checkpointing``, it runs GRPO (full fine-tuning,
AdamW, fp32) for ``--steps`` optimizer steps as one process and as real ``torchrun`` runs of N
ranks, and prints each rank's peak resident set size (RSS), overall and per phase:

* ``load``: building the run (each rank loads the whole model before FSDP2 shards it);
* ``gen``: the rollout (FSDP2: the policy's full weights gathered once, freed after);
* ``logp``: the no-grad forwards of pi_old / the reference (FSDP2: each unit gathered in turn);
* ``update``: forwards, backwards and optimizer steps;
* ``other``: the rest of the steps (rewards, metrics, the learning-rate schedule).

The peak of a run is the largest of a rank's training phases (all but ``load``), over its ranks.

Checkpoint writing is left out (the worker turns ``save_checkpoint``/``save_final`` into no-ops):
it gathers whole state dicts on rank 0, which is a cost of saving, not of training. RSS is sampled
every 10 ms from /proc/self/statm (plus ``ru_maxrss`` for the whole process); every run uses
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors go back to the OS and RSS follows the live
tensors (the same for every row of the table).

    python benchmarks/fsdp_memory.py                                   # both shapes, the default matrix
    python benchmarks/fsdp_memory.py --shapes 75m --ranks 1 2 4        # the small shape only
    python benchmarks/fsdp_memory.py --json fsdp_memory.json           # also write the numbers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {  # Qwen2-style decoder shapes (tied embeddings, as Qwen2-0.5B)
    "75m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=20, num_attention_heads=8, num_key_value_heads=2,
                vocab_size=32768),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 vocab_size=151936),  # Qwen2-0.5B's shape: 494 M parameters
}
PHASES = ("load", "gen", "logp", "update", "other")
TRAINING = ("gen", "logp", "update", "other")
REWARD = '''def alternating(prompts, completions, **_):
    """0, 1, 0, 1, ...: every group of two has signal, so every row trains (random weights match nothing)."""
    return [float(i % 2) for i in range(len(completions))]
'''


# --- the worker: one rank (or the one process) of a run --------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Sampler:
    """Peak RSS per phase, sampled on a thread; ``phase`` is set by the patched trainer."""

    def __init__(self) -> None:
        self.phase, self.peaks, self.running = "load", dict.fromkeys(PHASES, 0), True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            self.sample()
            time.sleep(0.01)

    def sample(self) -> None:
        self.peaks[self.phase] = max(self.peaks[self.phase], _rss_bytes())

    @contextlib.contextmanager
    def during(self, phase: str):
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.sample()
            self.phase = previous


def _patch(sampler: _Sampler) -> None:
    """Phase marks on the trainer's own seams, and no checkpoint writing."""
    from cohort.training import trainer

    gathered, released, optimise, train = trainer.Trainer.gathered, trainer.released, trainer.optimise, trainer.Trainer.train

    def marked_train(self):
        sampler.sample()
        sampler.phase = "other"
        return train(self)

    @contextlib.contextmanager
    def marked_gathered(self):
        with sampler.during("gen"), gathered(self):
            yield

    @contextlib.contextmanager
    def marked_released(models):
        with sampler.during("logp"), released(models):
            yield

    def marked_optimise(*args, **kwargs):
        with sampler.during("update"):
            return optimise(*args, **kwargs)

    trainer.Trainer.gathered, trainer.released, trainer.optimise = marked_gathered, marked_released, marked_optimise
    trainer.Trainer.train = marked_train
    trainer.Trainer.save_checkpoint = lambda self: None
    trainer.Trainer.save_final = lambda self: None


def worker(report: Path, args: list[str]) -> int:
    sampler = _Sampler()
    _patch(sampler)
    from cohort.cli import main

    code = main(["train", *args])
    sampler.running = False
    sampler.sample()
    rank = int(os.environ.get("RANK", "0"))
    peaks = {phase: value / 2**30 for phase, value in sampler.peaks.items()}
    peaks["max"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    (report / f"rank{rank}.json").write_text(json.dumps(peaks))
    return code


# --- the driver ---------------------------------------------------------------------------------------


def build_model(shape: str, directory: Path) -> Path:
    """A Qwen2-style model of ``shape`` with random weights and the tests' char tokenizer (cached)."""
    path = directory / f"qwen2-{shape}"
    if (path / "config.json").exists():
        return path
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from tiny_models import PAD, build_char_tokenizer
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_char_tokenizer()
    config = Qwen2Config(**SHAPES[shape], tie_word_embeddings=True, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.convert_tokens_to_ids(PAD))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run(model: Path, task: Path, ranks: int, strategy: str, beta: float, checkpointing: bool, cli: argparse.Namespace,
        work: Path) -> dict:
    report = Path(tempfile.mkdtemp(dir=work))
    args = [f"model.path={model}", f"data.task={task}", "algorithm.method=grpo", f"algorithm.beta={beta}",
            f"rollout.prompts_per_step={cli.prompts}", f"rollout.group_size={cli.group_size}",
            f"rollout.max_new_tokens={cli.tokens}", f"optim.micro_batch_size={cli.micro_batch_size}", f"train.steps={cli.steps}",
            "train.eval_before=false", "train.eval_after=false", f"train.out_dir={report / 'run'}", "log.console=quiet",
            "log.report=false", "log.tensorboard=false", "train.threads=1", "reward.functions=[{name: 'fsdp_memory_reward:alternating'}]",
            f"model.gradient_checkpointing={str(checkpointing).lower()}", f"distributed.strategy={strategy}"]
    me = [str(Path(__file__).resolve()), "--worker", str(report), "--"]
    launcher = [sys.executable, *me] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *me]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{work}"}
    started = time.perf_counter()
    result = subprocess.run([*launcher, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"run failed ({ranks} x {strategy}):\n{result.stderr[-4000:]}")
    per_rank = [json.loads((report / f"rank{r}.json").read_text()) for r in range(ranks)]
    shutil.rmtree(report, ignore_errors=True)
    return {"ranks": ranks, "strategy": strategy if ranks > 1 else "-", "beta": beta, "checkpointing": checkpointing,
            "seconds": seconds, "per_rank": per_rank}


def row(shape: str, result: dict, single: dict | None) -> str:
    ranks = result["per_rank"]
    train = max(max(r[p] for p in TRAINING) for r in ranks)
    worst = max(ranks, key=lambda r: max(r[p] for p in TRAINING))
    base = max(max(r[p] for p in TRAINING) for r in single["per_rank"]) if single else train
    phases = " | ".join(f"{worst[p]:.2f}" for p in PHASES[:4])
    return (f"| {shape} | {result['ranks']} | {result['strategy']} | {result['beta']} | {'on' if result['checkpointing'] else 'off'} "
            f"| {train:.2f} | {train / base:.2f} | {phases} | {result['seconds']:.0f} |")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker(Path(sys.argv[2]), sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["75m", "0.5b"], choices=sorted(SHAPES))
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2], help="1 = one process (the baseline)")
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp2"])
    parser.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.04])
    parser.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--skip", nargs="*", default=[], help="SHAPE:RANKS:STRATEGY triples not to run (e.g. 0.5b:2:ddp)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32, help="rollout.max_new_tokens (random weights rarely stop early)")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cohort-fsdp-memory")
    parser.add_argument("--json", type=Path)
    cli = parser.parse_args()
    cli.cache.mkdir(parents=True, exist_ok=True)
    task = cli.cache / "sums.jsonl"
    task.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(10) for b in range(10)))
    (cli.cache / "fsdp_memory_reward.py").write_text(REWARD)
    print("| shape | ranks | strategy | beta | act. ckpt | peak GiB/rank | x 1 process | load | gen | logp | update | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for shape in cli.shapes:
        model = build_model(shape, cli.cache)
        for beta in cli.betas:
            for checkpointing in (c == "on" for c in cli.checkpointing):
                single = None
                for ranks in cli.ranks:
                    for strategy in (["-"] if ranks == 1 else cli.strategies):
                        if f"{shape}:{ranks}:{strategy}" in cli.skip:
                            continue
                        result = run(model, task, ranks, "ddp" if strategy == "-" else strategy, beta, checkpointing, cli, cli.cache)
                        single = result if ranks == 1 else single
                        results.append({"shape": shape, **result})
                        print(row(shape, result, single), flush=True)
    if cli.json:
        cli.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
