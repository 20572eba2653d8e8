"""What ``cohort reproduce`` runs: the scale, the arms (one config each) and the paper's claims.

Every arm trains the bundled multi-step model (``builtin:multistep``) on the multi-step task with
the same budget of sampled completions (steps x prompts x G): online arms sample it over training,
RFT and DPO draw it once from the initial policy, SFT reads as many gold solutions. The settings
come from the paper where it gives them (beta 0.04, mu 1, the k3 KL) and from the task otherwise:
one learning rate for every arm, the largest at which plain GRPO trains stably on this model (5e-4
collapses it, 2e-4 does not); DPO in the paper's length-normalised form (A.1.4, Eq. 12).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Scale:
    """How big a reproduction is (full: the README's numbers; quick: the same code path, in minutes)."""

    steps: int
    prompts: int  # P per step
    group: int  # G samples per prompt
    seeds: int
    eval_problems: int  # held-out problems for the curves and the final pass@1
    eval_samples: int  # samples per held-out problem
    eval_every: int
    rm_samples: int  # initial-policy completions labelled to train the shared ORM and PRM
    mc_rollouts: int  # Math-Shepherd completions per step prefix
    iterations: int  # iterative RL's outer iterations (steps / iterations each)
    fig7_problems: int
    fig7_samples: int  # K up to this
    lr: float = 2e-4
    max_new_tokens: int = 48

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Scale(steps=60, prompts=16, group=8, seeds=3, eval_problems=300, eval_samples=2, eval_every=15, rm_samples=768,
             mc_rollouts=4, iterations=3, fig7_problems=100, fig7_samples=64)
QUICK = Scale(steps=6, prompts=4, group=4, seeds=2, eval_problems=24, eval_samples=2, eval_every=3, rm_samples=32,
              mc_rollouts=2, iterations=2, fig7_problems=8, fig7_samples=8)


@dataclass(frozen=True)
class Arm:
    """One configuration: a label for the tables, the figure it belongs to, and its config overrides."""

    name: str
    label: str
    figure: str
    overrides: Callable[[Scale, Path], list[str]]


def _budget(scale: Scale) -> list[str]:
    """Offline arms draw as many samples once as an online arm samples over its training."""
    return [f"offline.samples_per_prompt={scale.group}", f"offline.max_prompts={scale.steps * scale.prompts}"]


def _orm(models: Path) -> str:
    return f"reward.functions=[{{name: reward_model, path: '{models / 'orm'}'}}, {{name: final_answer, weight: 0.0}}]"


ARMS: tuple[Arm, ...] = (
    Arm("sft", "SFT (gold solutions)", "paradigm", lambda s, m: ["algorithm.method=sft", "sft.target_column=solution"]),
    Arm("rft", "RFT (offline)", "figure5", lambda s, m: ["algorithm.method=rft", *_budget(s)]),
    Arm("online_rft", "Online RFT", "figure5", lambda s, m: ["algorithm.method=online_rft"]),
    Arm("dpo", "DPO (offline pairs, length-normalised)", "paradigm",
        lambda s, m: ["algorithm.method=dpo", "dpo.length_normalized=true", "dpo.beta=1.0", *_budget(s)]),
    Arm("ppo", "PPO (value model, KL in the reward)", "paradigm", lambda s, m: ["algorithm.method=ppo", "algorithm.beta=0.04"]),
    Arm("grpo_os", "GRPO + outcome supervision (rule)", "figure5", lambda s, m: ["algorithm.beta=0.04"]),
    Arm("grpo_orm", "GRPO + outcome supervision (trained ORM)", "paradigm", lambda s, m: ["algorithm.beta=0.04", _orm(m)]),
    Arm("grpo_ps", "GRPO + process supervision (trained PRM)", "figure5",
        lambda s, m: ["algorithm.beta=0.04", "algorithm.advantage=process", f"reward.process_model={{path: '{m / 'prm'}'}}"]),
    Arm("grpo_ps_iterative", "GRPO + PS, PRM retrained each iteration", "figure6",
        lambda s, m: ["algorithm.beta=0.04", "algorithm.advantage=process", f"iterative.iterations={s.iterations}",
                      f"iterative.steps_per_iteration={s.steps // s.iterations}", f"iterative.reward_model={m / 'prm'}",
                      f"iterative.rm_samples={s.rm_samples}", f"iterative.mc_rollouts={s.mc_rollouts}", "iterative.rm_epochs=3",
                      f"train.steps={(s.steps // s.iterations) * s.iterations}",
                      f"train.eval_every={s.steps // s.iterations}"]),  # held-out pass@1 at every iteration's end
    Arm("dr_grpo", "Dr. GRPO (no length or std normalisation)", "length",
        lambda s, m: ["algorithm.preset=dr_grpo", "algorithm.beta=0.04", "optim.betas=[0.9, 0.999]"]),
)
ARM_NAMES = tuple(arm.name for arm in ARMS)


def common_overrides(scale: Scale, seed: int, out_dir: Path) -> list[str]:
    """What every arm shares: model, task, budget, evaluation, one thread, quiet."""
    return [
        "model.path=builtin:multistep", "data.task=multistep", f"rollout.max_new_tokens={scale.max_new_tokens}",
        f"rollout.prompts_per_step={scale.prompts}", f"rollout.group_size={scale.group}", f"optim.lr={scale.lr}",
        f"train.steps={scale.steps}", f"train.seed={seed}", f"train.eval_every={scale.eval_every}",
        f"data.eval_limit={scale.eval_problems}", f"train.eval_samples={scale.eval_samples}", "train.threads=1",
        f"train.save_every={max(1, scale.steps // 3)}", f"train.out_dir={out_dir}", "log.console=quiet", "log.report=false",
        "log.completions_every=0", "log.tensorboard=false",
    ]


@dataclass(frozen=True)
class Claim:
    """A finding of the paper, as an ordering between two arms' numbers (``better`` should be higher)."""

    key: str
    text: str
    paper: str
    better: str
    worse: str
    measure: str  # "final_pass1", "gain_iteration1_vs_2", "maj_vs_pass", "wrong_length_growth"


CLAIMS: tuple[Claim, ...] = (
    Claim("online_vs_offline", "Online sampling performs well in the later stage (online RFT > RFT)",
          "Figure 5 (1.3B): GSM8K 62.4 vs 60.2, MATH 29.2 vs 27.9 at the end; about equal early", "online_rft", "rft", "final_pass1"),
    Claim("grpo_vs_online_rft", "GRPO's graded, signed coefficients beat online RFT's flat ones (GRPO+OS > online RFT)",
          "Figure 5: GSM8K 64.1 vs 62.4, MATH 29.3 vs 29.2", "grpo_os", "online_rft", "final_pass1"),
    Claim("process_vs_outcome", "GRPO+OS vs GRPO+PS: fine-grained, step-aware gradient coefficients benefit (PS > OS)",
          "Figure 5: GSM8K 65.0 vs 64.1, MATH 29.7 vs 29.3", "grpo_ps", "grpo_os", "final_pass1"),
    Claim("iterative", "Iteration can improve the training performance (iterative PRM retraining > a fixed PRM)",
          "Figure 6 (7B): GSM8K 87.0 -> 88.2 -> 89.1, MATH 49.9 -> 52.2 -> 51.7 over iterations 0, 1, 2", "grpo_ps_iterative",
          "grpo_ps", "final_pass1"),
    Claim("iteration_one", "... especially in Iteration 1 (the first iteration's gain exceeds the second's)",
          "Figure 6: +1.2 then +0.9 (GSM8K), +2.3 then -0.5 (MATH)", "grpo_ps_iterative", "grpo_ps_iterative", "gain_iteration1_vs_2"),
    Claim("maj_not_pass", "RL improves Maj@K but not Pass@K",
          "Figure 7 (7B, K=64): GSM8K Maj +1.5, Pass -1.8; MATH Maj +1.0, Pass -0.7", "grpo_os", "grpo_os", "maj_vs_pass"),
    Claim("length_bias", "GRPO's 1/|o| normalisation lengthens wrong answers; Dr. GRPO does not",
          "Dr. GRPO §3.1, Figure 5", "grpo_os", "dr_grpo", "wrong_length_growth"),
)
