"""What ``cohort reproduce`` runs: the scale, the arms (one config each) and the paper's claims.

Every arm trains the bundled multi-step model (``builtin:multistep``) on the multi-step task's
4-operation problems (``multistep4``: the longest chains, where a group most often holds no right
answer and process supervision has the most to add) with the same budget of sampled completions
(steps x prompts x G): online arms sample it over training, RFT and DPO draw it once from the
initial policy, SFT reads as many gold solutions. The settings come from the paper where it gives
them (beta 0.04, mu 1, the k3 KL) and from the task otherwise: one learning rate for every arm, the
largest at which plain GRPO trains stably on this model; DPO in the paper's length-normalised form
(A.1.4, Eq. 12). The learned reward models are the shipped ones (``builtin:multistep_prm`` /
``builtin:multistep_orm``, built by ``scripts/build_reward_models.py``); iterative RL continues
training the PRM from the shipped one.

Arms that decide the process-supervision claims (``Arm.comparison``) run ``Scale.seeds`` seeds, the
others ``Scale.other_seeds``; seed s of every arm shares its data order, its sampling seeds and the
held-out problems, so claims are judged on paired per-seed differences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

PRM, ORM = "builtin:multistep_prm", "builtin:multistep_orm"


@dataclass(frozen=True)
class Scale:
    """How big a reproduction is (full: the README's numbers; quick: the same code path, in minutes)."""

    steps: int
    prompts: int  # P per step
    group: int  # G samples per prompt
    seeds: int  # seeds of the comparison arms (the process-supervision claims)
    other_seeds: int  # seeds of the other arms
    eval_problems: int  # held-out problems for the curves and the final pass@1
    eval_samples: int  # samples per held-out problem
    eval_every: int
    rm_samples: int  # policy completions labelled per iteration of iterative RL
    mc_rollouts: int  # Math-Shepherd completions per step prefix (iterative RL's relabelling)
    iterations: int  # iterative RL's outer iterations (steps / iterations each)
    fig7_problems: int
    fig7_samples: int  # K up to this
    lr: float = 2e-4
    max_new_tokens: int = 48
    task: str = "multistep4"
    rm_gate: float = 0.55  # the shipped PRM's held-out within-group AUC must reach this (0: no gate)
    quick: bool = False  # intervals of a quick run are not meaningful: no verdicts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_steps(self, steps: int) -> "Scale":
        """The same scale trained for ``steps`` steps, evaluated mid-way and at the end (iterative RL trains
        the largest multiple of its iterations that fits)."""
        if steps < self.iterations:
            raise ValueError(f"--steps must be >= {self.iterations} (iterative RL's iterations), got {steps}")
        return replace(self, steps=steps, eval_every=max(1, steps // 2))


FULL = Scale(steps=60, prompts=16, group=8, seeds=5, other_seeds=3, eval_problems=500, eval_samples=2, eval_every=30,
             rm_samples=384, mc_rollouts=8, iterations=3, fig7_problems=100, fig7_samples=64)
QUICK = Scale(steps=6, prompts=4, group=4, seeds=2, other_seeds=2, eval_problems=24, eval_samples=2, eval_every=3,
              rm_samples=32, mc_rollouts=2, iterations=3, fig7_problems=8, fig7_samples=8, quick=True)


@dataclass(frozen=True)
class Arm:
    """One configuration: a label for the tables, the figure it belongs to, its config overrides, and
    whether it decides a process-supervision claim (then it runs ``Scale.seeds`` seeds)."""

    name: str
    label: str
    figure: str
    overrides: Callable[[Scale], list[str]]
    comparison: bool = False
    reward_model: str | None = None  # the learned reward model it trains against (for its within-group AUC)

    def seed_count(self, scale: Scale) -> int:
        return scale.seeds if self.comparison else scale.other_seeds


def _budget(scale: Scale) -> list[str]:
    """Offline arms draw as many samples once as an online arm samples over its training."""
    return [f"offline.samples_per_prompt={scale.group}", f"offline.max_prompts={scale.steps * scale.prompts}"]


def _process(path: str, credit: str = "sum", outcome_weight: float = 0.0) -> list[str]:
    return ["algorithm.beta=0.04", "algorithm.advantage=process", f"algorithm.process_credit={credit}",
            f"algorithm.process_outcome_weight={outcome_weight}", f"reward.process_model={{path: '{path}'}}"]


def _iterative(s: Scale) -> list[str]:
    per = s.steps // s.iterations
    return ["algorithm.beta=0.04", "algorithm.advantage=process", f"iterative.iterations={s.iterations}",
            f"iterative.steps_per_iteration={per}", f"iterative.reward_model={PRM}", f"iterative.rm_samples={s.rm_samples}",
            f"iterative.mc_rollouts={s.mc_rollouts}", "iterative.mc_label=soft", "iterative.rm_epochs=2", "iterative.rm_lr=3e-4",
            f"train.steps={per * s.iterations}", f"train.eval_every={per}"]  # held-out pass@1 at every iteration's end


VR_WEIGHT = 1.0
"""grpo_ps_vr: the rule's weight at the last step, beside PRM step scores in [0, 1]."""

ARMS: tuple[Arm, ...] = (
    Arm("sft", "SFT (gold solutions)", "paradigm", lambda s: ["algorithm.method=sft", "sft.target_column=solution"]),
    Arm("rft", "RFT (offline)", "figure5", lambda s: ["algorithm.method=rft", *_budget(s)]),
    Arm("online_rft", "Online RFT", "figure5", lambda s: ["algorithm.method=online_rft"]),
    Arm("dpo", "DPO (offline pairs, length-normalised)", "paradigm",
        lambda s: ["algorithm.method=dpo", "dpo.length_normalized=true", "dpo.beta=1.0", *_budget(s)]),
    Arm("ppo", "PPO (value model, KL in the reward)", "paradigm", lambda s: ["algorithm.method=ppo", "algorithm.beta=0.04"]),
    Arm("grpo_os", "GRPO + outcome supervision (rule)", "figure5", lambda s: ["algorithm.beta=0.04"], comparison=True),
    Arm("grpo_orm", "GRPO + outcome supervision (shipped ORM)", "paradigm",
        lambda s: ["algorithm.beta=0.04", f"reward.functions=[{{name: reward_model, path: '{ORM}'}}, {{name: final_answer, weight: 0.0}}]"],
        reward_model=ORM),
    Arm("grpo_ps", "GRPO + PS, sum credit (paper), shipped PRM", "figure5", lambda s: _process(PRM), comparison=True, reward_model=PRM),
    Arm("grpo_ps_min", "GRPO + PS, min credit (PURE), shipped PRM", "figure5", lambda s: _process(PRM, "min"), comparison=True,
        reward_model=PRM),
    Arm("grpo_ps_gold", "GRPO + PS, sum credit, gold step checker", "figure5", lambda s: _process("gold"), comparison=True),
    Arm("grpo_ps_vr", "GRPO + PS, min credit, shipped PRM + the rule's outcome advantage", "figure5",
        lambda s: _process(PRM, "min", VR_WEIGHT), comparison=True, reward_model=PRM),
    Arm("grpo_ps_iterative", "GRPO + PS (sum), PRM retrained each iteration", "figure6", _iterative, reward_model=PRM),
    Arm("dr_grpo", "Dr. GRPO (no length or std normalisation)", "length",
        lambda s: ["algorithm.preset=dr_grpo", "algorithm.beta=0.04", "optim.betas=[0.9, 0.999]"]),
)
ARM_NAMES = tuple(arm.name for arm in ARMS)


def select_arms(names: str | None) -> tuple[Arm, ...]:
    """The arms a comma-separated ``--arms`` list names (all of them for None), in the plan's order."""
    if names is None:
        return ARMS
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in ARM_NAMES]
    if unknown or not wanted:
        raise ValueError(f"--arms {names!r}: unknown arm(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(ARM_NAMES)}")
    return tuple(arm for arm in ARMS if arm.name in wanted)


def common_overrides(scale: Scale, seed: int, out_dir: Path) -> list[str]:
    """What every arm shares: model, task, budget, evaluation, one thread, quiet."""
    return [
        "model.path=builtin:multistep", f"data.task={scale.task}", f"rollout.max_new_tokens={scale.max_new_tokens}",
        f"rollout.prompts_per_step={scale.prompts}", f"rollout.group_size={scale.group}", f"optim.lr={scale.lr}",
        f"train.steps={scale.steps}", f"train.seed={seed}", f"train.eval_every={scale.eval_every}",
        f"data.eval_limit={scale.eval_problems}", f"train.eval_samples={scale.eval_samples}", "train.threads=1",
        "train.eval_before=false",  # the initial policy is evaluated once per seed (reproduce.phases)
        f"train.save_every={max(1, scale.steps // 3)}", f"train.out_dir={out_dir}", "log.console=quiet", "log.report=false",
        "log.completions_every=0", "log.tensorboard=false",
    ]


@dataclass(frozen=True)
class Claim:
    """A finding of the paper, as an ordering between two arms' numbers (``better`` should be higher).

    ``paper_effect``: the size of the paper's effect in our units (points of accuracy as a fraction,
    the larger of its GSM8K and MATH numbers), the yardstick for the minimum detectable effect; None
    where the paper gives no number in these units.
    """

    key: str
    text: str
    paper: str
    better: str
    worse: str
    measure: str  # "final_pass1", "gain_iteration1_vs_2", "maj_vs_pass", "wrong_length_growth"
    paper_effect: float | None = None


CLAIMS: tuple[Claim, ...] = (
    Claim("online_vs_offline", "Online sampling performs well in the later stage (online RFT > RFT)",
          "Figure 5 (1.3B): GSM8K 62.4 vs 60.2, MATH 29.2 vs 27.9 at the end; about equal early", "online_rft", "rft",
          "final_pass1", 0.022),
    Claim("grpo_vs_online_rft", "GRPO's graded, signed coefficients beat online RFT's flat ones (GRPO+OS > online RFT)",
          "Figure 5: GSM8K 64.1 vs 62.4, MATH 29.3 vs 29.2", "grpo_os", "online_rft", "final_pass1", 0.017),
    Claim("process_vs_outcome", "GRPO+OS vs GRPO+PS: fine-grained, step-aware gradient coefficients benefit (PS > OS)",
          "Figure 5: GSM8K 65.0 vs 64.1, MATH 29.7 vs 29.3", "grpo_ps", "grpo_os", "final_pass1", 0.009),
    Claim("gold_process_vs_outcome", "PS as a signal, with the gold step checker as the process reward (PS gold > OS)",
          "Figure 5's PS > OS (+0.9 GSM8K, +0.4 MATH), the PRM replaced by the truth", "grpo_ps_gold", "grpo_os",
          "final_pass1", 0.009),
    Claim("min_vs_sum", "PURE: min-form credit does not collapse where sum-form does (PS min > PS sum)",
          "PURE (arXiv:2504.15275): sum-form collapses at the start; min-form matches verifiable rewards", "grpo_ps_min",
          "grpo_ps", "final_pass1", None),
    Claim("iterative", "Iteration can improve the training performance (iterative PRM retraining > a fixed PRM)",
          "Figure 6 (7B): GSM8K 87.0 -> 88.2 -> 89.1, MATH 49.9 -> 52.2 -> 51.7 over iterations 0, 1, 2", "grpo_ps_iterative",
          "grpo_ps", "final_pass1", 0.021),
    Claim("iteration_one", "... especially in Iteration 1 (the first iteration's gain exceeds the second's)",
          "Figure 6: +1.2 then +0.9 (GSM8K), +2.3 then -0.5 (MATH)", "grpo_ps_iterative", "grpo_ps_iterative",
          "gain_iteration1_vs_2", 0.028),
    Claim("maj_not_pass", "RL improves Maj@K but not Pass@K",
          "Figure 7 (7B, K=64): GSM8K Maj +1.5, Pass -1.8; MATH Maj +1.0, Pass -0.7", "grpo_os", "grpo_os", "maj_vs_pass",
          0.015),
    Claim("length_bias", "GRPO's 1/|o| normalisation lengthens wrong answers; Dr. GRPO does not",
          "Dr. GRPO §3.1, Figure 5", "grpo_os", "dr_grpo", "wrong_length_growth", None),
)

PRIOR_DIFFERENCE_SD = 0.035
"""The standard deviation over seeds of the paired difference in final pass@1 between two arms,
assumed before a run to compute its minimum detectable effect: measured in a 3-seed pilot at the full
scale (grpo_ps_gold - grpo_os: +0.030, -0.012, +0.063; sd 0.038). results.json's claims also carry
the minimum detectable effect from each run's observed spread."""
