"""Range rules of the core sections, and how they fit together (one reward model per process
supervision mode, train.steps of iterative RL). A method's own section checks itself (its
``check()``); rules that name registered pieces (aggregations, estimators) are the methods'.
"""

from __future__ import annotations

from typing import Any

from cohort.config.schema import ROLLOUT_ENGINES, Config, ConfigError


def check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {expected}")


def _validate_sampling(config: Config) -> None:
    r, t = config.rollout, config.train
    check(r.group_size >= 1, "rollout.group_size", r.group_size, "an int >= 1")
    check(r.prompts_per_step >= 1, "rollout.prompts_per_step", r.prompts_per_step, "an int >= 1")
    check(r.max_new_tokens >= 1, "rollout.max_new_tokens", r.max_new_tokens, "an int >= 1")
    check(r.temperature > 0, "rollout.temperature", r.temperature, "a float > 0 (training samples)")
    check(0 < r.top_p <= 1, "rollout.top_p", r.top_p, "a float in (0, 1]")
    check(r.top_k >= 0, "rollout.top_k", r.top_k, "an int >= 0 (0 = off)")
    check(r.engine in ROLLOUT_ENGINES, "rollout.engine", r.engine, f"one of {', '.join(ROLLOUT_ENGINES)}")
    check(0 < r.vllm_memory_fraction <= 1, "rollout.vllm_memory_fraction", r.vllm_memory_fraction, "a fraction in (0, 1]")
    tis = config.algorithm.tis_cap
    check(tis is None or tis > 0, "algorithm.tis_cap", tis, "null (off) or a float > 0")
    check(tis is None or r.engine != "native", "algorithm.tis_cap", tis,
          "null with rollout.engine=native (its log-probs are the policy's own: there is no mismatch to correct)")
    check(t.steps >= 0, "train.steps", t.steps, "an int >= 0")
    check(t.batch_size is None or t.batch_size >= 1, "train.batch_size", t.batch_size, "null or an int >= 1")
    check(t.save_every >= 0, "train.save_every", t.save_every, "an int >= 0 (0 = only at the end)")
    check(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, "an int >= 1")
    check(t.eval_samples >= 1, "train.eval_samples", t.eval_samples, "an int >= 1")
    check(t.eval_every >= 0, "train.eval_every", t.eval_every, "an int >= 0 (0 = never)")
    check(t.threads is None or t.threads >= 1, "train.threads", t.threads, "null or an int >= 1")
    check(bool(t.out_dir), "train.out_dir", t.out_dir, "a directory path")
    check(config.log.completions_every >= 0, "log.completions_every", config.log.completions_every, "an int >= 0")
    check(config.distributed.timeout_s > 0, "distributed.timeout_s", config.distributed.timeout_s, "a float > 0")
    d = config.distributed
    check(d.strategy == "fsdp2" or (d.mixed_precision == "none" and not d.cpu_offload), "distributed.strategy", d.strategy,
           "fsdp2 when distributed.mixed_precision or distributed.cpu_offload is set (they are FSDP2's levers)")


def _validate_algorithm(config: Config) -> None:
    a, o = config.algorithm, config.optim
    check(a.std_ddof in (0, 1), "algorithm.std_ddof", a.std_ddof, "0 (population) or 1 (sample)")
    check(a.adv_eps >= 0, "algorithm.adv_eps", a.adv_eps, "a float >= 0")
    check(a.eps_low >= 0, "algorithm.eps_low", a.eps_low, "a float >= 0")
    check(a.eps_high >= 0, "algorithm.eps_high", a.eps_high, "a float >= 0")
    check(a.dual_clip is None or a.dual_clip > 1, "algorithm.dual_clip", a.dual_clip, "null or a float > 1")
    check(a.beta >= 0, "algorithm.beta", a.beta, "a float >= 0")
    check(a.mu >= 1, "algorithm.mu", a.mu, "an int >= 1")
    check(a.ref_reset_every >= 0, "algorithm.ref_reset_every", a.ref_reset_every, "an int >= 0 (0 = never)")
    check(a.dynamic_sampling_max_rounds >= 1, "algorithm.dynamic_sampling_max_rounds", a.dynamic_sampling_max_rounds, "an int >= 1")
    check(0 <= a.overlong_buffer < 1, "algorithm.overlong_buffer", a.overlong_buffer, "a fraction in [0, 1)")
    check(o.lr > 0, "optim.lr", o.lr, "a float > 0")
    check(o.max_grad_norm >= 0, "optim.max_grad_norm", o.max_grad_norm, "a float >= 0 (0 = off)")
    check(o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "an int >= 0")
    check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", o.min_lr_ratio, "a fraction in [0, 1]")
    check(o.mini_batches >= 1, "optim.mini_batches", o.mini_batches, "an int >= 1")
    check(o.micro_batch_size >= 1, "optim.micro_batch_size", o.micro_batch_size, "an int >= 1")
    check(o.micro_batch_tokens >= 0, "optim.micro_batch_tokens", o.micro_batch_tokens, "an int >= 0 (0 = rows only)")
    check(all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas), "two floats in [0, 1)")
    off = config.offline
    check(off.samples_per_prompt >= 1, "offline.samples_per_prompt", off.samples_per_prompt, "an int >= 1")
    check(off.max_prompts is None or off.max_prompts >= 1, "offline.max_prompts", off.max_prompts, "null or an int >= 1")


def _validate_iterative(config: Config, steps_set: bool) -> None:
    """Iterative RL's ranges, and train.steps = iterations x steps_per_iteration (set when left unset)."""
    i = config.iterative
    check(i.iterations >= 0, "iterative.iterations", i.iterations, "an int >= 0 (0 = off)")
    if i.iterations == 0:
        return
    check(i.steps_per_iteration >= 1, "iterative.steps_per_iteration", i.steps_per_iteration, "an int >= 1 with iterative.iterations > 0")
    check(i.rm_samples >= 1 and i.mc_rollouts >= 1 and i.rm_epochs >= 1 and i.rm_batch_size >= 1, "iterative.rm_samples",
           i.rm_samples, "rm_samples, mc_rollouts, rm_epochs and rm_batch_size all >= 1")
    check(0 <= i.replay_fraction < 1, "iterative.replay_fraction", i.replay_fraction, "a fraction in [0, 1)")
    check(0 <= i.rm_held_out < 1, "iterative.rm_held_out", i.rm_held_out, "a fraction in [0, 1)")
    check(i.rm_lr > 0, "iterative.rm_lr", i.rm_lr, "a float > 0")
    wanted_labels = ("rule",) if i.supervision == "outcome" else ("monte_carlo", "gold")
    check(i.labels in wanted_labels, "iterative.labels", i.labels, f"one of {', '.join(wanted_labels)} with iterative.supervision={i.supervision}")
    process = config.algorithm.advantage == "process"
    check(process == (i.supervision == "process"), "algorithm.advantage", config.algorithm.advantage,
           "process exactly when iterative.supervision=process")
    total = i.iterations * i.steps_per_iteration
    if steps_set:
        check(config.train.steps == total, "train.steps", config.train.steps,
               f"iterative.iterations x iterative.steps_per_iteration = {total} (or leave train.steps unset)")
    config.train.steps = total


def _validate_data_and_rewards(config: Config) -> None:
    d, w = config.data, config.reward
    check(bool(config.model.path), "model.path", config.model.path, "a model directory (or hub id)")
    check(0 <= d.test_fraction < 1, "data.test_fraction", d.test_fraction, "a fraction in [0, 1)")
    check(not (d.test_path and d.test_fraction), "data.test_fraction", d.test_fraction, "0 when data.test_path is set (one held-out source)")
    check(d.eval_limit is None or d.eval_limit >= 1, "data.eval_limit", d.eval_limit, "null or an int >= 1")
    if d.format != "plain":
        check((d.prompt_column, d.answer_column) == ("prompt", "answer"), "data.format", d.format,
               "plain when data.prompt_column / data.answer_column are changed (gsm8k / math name their source "
               "columns with data.question_column / data.solution_column and produce prompt / answer)")
    else:
        check(d.question_column is None and d.solution_column is None, "data.question_column", d.question_column,
               "null unless data.format is gsm8k or math")
    check(w.timeout_s > 0, "reward.timeout_s", w.timeout_s, "a float > 0")
    check(w.ray_workers >= 1, "reward.ray_workers", w.ray_workers, "an int >= 1")
    check(w.max_failed_steps >= 0, "reward.max_failed_steps", w.max_failed_steps, "an int >= 0 (0 = never stop)")
    check(w.ray_chunk_size >= 1, "reward.ray_chunk_size", w.ray_chunk_size, "an int >= 1")
    iterative_process = config.iterative.iterations > 0 and config.iterative.supervision == "process"
    if config.algorithm.advantage == "process" and not iterative_process:
        check(bool(w.process_model) and isinstance(w.process_model.get("path"), str), "reward.process_model",
               w.process_model, "a mapping with a 'path' to a process reward model, since algorithm.advantage=process")
    elif iterative_process:
        check(w.process_model is None or "path" not in w.process_model, "reward.process_model", w.process_model,
               "no 'path' with iterative.supervision=process (the iterations train the PRM; set iterative.reward_model "
               "to start from one)")
    else:
        check(w.process_model is None, "reward.process_model", w.process_model, "null unless algorithm.advantage=process")
    for i, spec in enumerate(w.functions):
        check(isinstance(spec.get("name"), str) and bool(spec["name"]), f"reward.functions[{i}]", spec, "a mapping with a 'name'")
        weight = spec.get("weight", 1.0)
        check(isinstance(weight, (int, float)) and not isinstance(weight, bool), f"reward.functions[{i}].weight", weight, "a number")


def validate(config: Config, *, steps_set: bool) -> None:
    """Every core rule, then every section's own ``check()``; ConfigError on the first broken one."""
    _validate_data_and_rewards(config)
    _validate_iterative(config, steps_set=steps_set)
    _validate_sampling(config)
    _validate_algorithm(config)
    for section in config.sections().values():
        section_check = getattr(section, "check", None)
        if callable(section_check):
            section_check()
