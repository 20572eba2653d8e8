"""IPO (cohort/methods/ipo.py): the squared pairwise loss, against hand-computed numbers and TRL's
formula, and the method in the loop (the generic method tests in test_methods.py run it too)."""

from __future__ import annotations

import math

import pytest
import torch
from test_methods import method_config, metric_lines, task_file, train  # noqa: F401  (task_file is a fixture)

from cohort.algo import PAIR_LOSSES, dpo_loss
from cohort.config import ConfigError, load_config
from cohort.methods import METHODS, check_config

F64 = torch.float64


def test_ipo_is_registered_as_a_pair_method_that_reads_the_dpo_section():
    ipo = METHODS.get("ipo")
    assert ipo.samples == "offline" and ipo.unit == ipo.micro_unit == "group"
    assert ipo.reads_key("dpo.beta") and ipo.reads_key("offline.samples_per_prompt") and not ipo.reads_key("algorithm.beta")
    assert "ipo" in PAIR_LOSSES
    with pytest.raises(ConfigError, match="algorithm.mu belongs to method grpo / ppo, not ipo"):
        check_config(load_config(None, ["model.path=x", "algorithm.method=ipo", "algorithm.mu=2"]))


def test_ipo_loss_by_hand():
    """Two pairs, sums of log-ratios: h = (0.5 - 0.1) - (0.2 - 0.4) = 0.6 and (-1 - 0) - (1 - 0) = -2;
    tau = 0.5 -> target 1/(2 tau) = 1; loss = mean((0.6 - 1)^2, (-2 - 1)^2) = (0.16 + 9) / 2 = 4.58;
    d loss / d chosen log-prob of a token = 2 (h - 1) / 2 pairs = (h - 1): -0.4 and -3."""
    chosen = torch.tensor([[0.3, 0.2], [-1.0, 0.0]], dtype=F64, requires_grad=True)
    rejected = torch.tensor([[0.2, 0.0], [1.0, 0.0]], dtype=F64)
    ref_chosen = torch.tensor([[0.1, 0.0], [0.0, 0.0]], dtype=F64)
    ref_rejected = torch.tensor([[0.4, 0.0], [0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[True, True], [True, False]])
    loss, stats = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, mask, mask, beta=0.5, loss="ipo")
    assert float(loss.detach()) == pytest.approx(4.58, abs=1e-12)
    assert float(stats["margin"]) == pytest.approx(0.5 * (0.6 - 2.0) / 2, abs=1e-12)  # beta h, mean over pairs
    assert float(stats["accuracy"]) == pytest.approx(0.5)
    loss.backward()
    assert torch.allclose(chosen.grad, torch.tensor([[-0.4, -0.4], [-3.0, 0.0]], dtype=F64), atol=1e-12)


def test_the_ipo_loss_is_smallest_at_the_target_gap():
    """Unlike DPO's sigmoid, IPO's loss is minimal (gradient 0) at h = 1/(2 tau), not at h -> infinity."""
    tau = 0.25
    for h, zero_gradient in ((1 / (2 * tau), True), (1 / (2 * tau) + 3, False)):
        gap = torch.tensor([h], dtype=F64, requires_grad=True)
        PAIR_LOSSES.get("ipo")(gap, tau).sum().backward()
        assert (abs(float(gap.grad)) < 1e-12) == zero_gradient
    gap = torch.tensor([50.0], dtype=F64, requires_grad=True)
    PAIR_LOSSES.get("sigmoid")(gap, tau).sum().backward()
    assert 0 > float(gap.grad) > -1e-5  # DPO still pushes a huge gap further


def trl_ipo(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta):
    """TRL 1.x DPOTrainer, loss_type='ipo': token sums of the log-ratios divided by the completion
    lengths, then ((avg chosen - avg rejected) - 1/(2 beta))^2, mean over pairs (restated)."""
    chosen_score = ((chosen - ref_chosen) * chosen_mask).sum(-1) / chosen_mask.sum(-1).clamp(min=1)
    rejected_score = ((rejected - ref_rejected) * rejected_mask).sum(-1) / rejected_mask.sum(-1).clamp(min=1)
    return ((chosen_score - rejected_score - 1 / (2 * beta)) ** 2).mean()


def test_trl_still_computes_ipo_as_restated_here():
    inspect = pytest.importorskip("inspect")
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    source = inspect.getsource(trl_dpo.DPOTrainer._compute_loss)
    assert "chosen_avg_score = chosen_scores / chosen_mask.sum(dim=1).clamp(min=1.0)" in source
    assert "per_sequence_loss = (ipo_delta - 1 / (2 * self.beta)) ** 2" in source


@pytest.mark.parametrize("seed", range(4))
def test_ipo_with_length_normalized_log_ratios_matches_trl(seed):
    """cohort's dpo.length_normalized=true is TRL's (and the IPO authors') per-token average."""
    g = torch.Generator().manual_seed(seed)
    per_token = [torch.randn(5, 7, dtype=F64, generator=g) for _ in range(4)]
    cm, rm = torch.rand(5, 7, generator=g) > 0.3, torch.rand(5, 7, generator=g) > 0.3
    cm[:, 0] = rm[:, 0] = True
    c = per_token[0].requires_grad_(True)
    ours, _ = dpo_loss(c, per_token[1], per_token[2], per_token[3], cm, rm, beta=0.3, length_normalized=True, loss="ipo")
    theirs = trl_ipo(c, per_token[1], per_token[2], per_token[3], cm, rm, beta=0.3)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), abs=1e-12)
    assert torch.allclose(torch.autograd.grad(ours, c)[0], torch.autograd.grad(theirs, c)[0], atol=1e-12)


def test_ipo_trains_on_preference_pairs_and_pulls_the_gap_to_its_target(tmp_path, tiny_llama_dir, task_file):  # noqa: F811
    """From a preference file, with a target gap of 1/(2 tau) = 1 per token: the mean margin beta h
    moves from 0 toward tau x 1 = 0.5, and the loss falls."""
    out = tmp_path / "ipo"
    config = method_config(out, tiny_llama_dir, task_file, "ipo", "dpo.pairs=dataset", "dpo.beta=0.5",
                           "dpo.length_normalized=true", "train.batch_size=6", "train.steps=12", "optim.lr=3e-3",
                           "train.eval_before=false", "train.eval_after=false")
    train(config)
    metrics = metric_lines(out)
    first, last = metrics[0], metrics[-1]
    assert math.isclose(first["dpo/margin"], 0.0, abs_tol=1e-6)  # the policy starts as the reference
    assert 0.05 < last["dpo/margin"] < 0.5 + 0.25 and last["loss"] < first["loss"]
