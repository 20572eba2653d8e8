"""Config: defaults, presets, YAML + dotted overrides, and errors that name the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cohort.cli import main
from cohort.config import (
    PRESETS,
    ConfigError,
    build_config,
    field_types,
    load_config,
    parse_overrides,
)
from cohort.methods import check_config

REQUIRED_KEYS = [
    "model.path",
    "data.task",
    "rollout.group_size",
    "rollout.prompts_per_step",
    "rollout.max_new_tokens",
    "rollout.temperature",
    "algorithm.preset",
    "algorithm.beta",
    "optim.lr",
    "train.steps",
    "train.seed",
    "train.out_dir",
    "train.resume",
]


def test_the_issue_keys_exist_with_their_names():
    for key in REQUIRED_KEYS:
        assert key in field_types(), key


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_applies_and_its_settings_are_real_keys(name):
    for key in PRESETS[name].settings:
        assert key in field_types(), f"preset {name} sets unknown key {key}"
    config = build_config({"model.path": "m", "algorithm.preset": name})
    for key, value in PRESETS[name].settings.items():
        section, field = key.split(".")
        assert getattr(getattr(config, section), field) == value


def test_precedence_defaults_then_preset_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": "m"}, "algorithm": {"preset": "dapo"}, "rollout": {"group_size": 4}}))
    config = load_config(path, ["algorithm.eps_high=0.3", "optim.lr=1e-5"])
    assert config.rollout.group_size == 4  # YAML beats the preset's 16
    assert config.algorithm.eps_high == 0.3  # override beats the preset's 0.28
    assert config.algorithm.aggregation == "token_mean"  # from the preset
    assert config.algorithm.dynamic_sampling is True  # preset run default
    assert config.optim.lr == 1e-5  # "1e-5" is a string in YAML 1.1; converted
    assert config.rollout.max_new_tokens == 256  # default


def test_overrides_are_typed_like_yaml():
    flat = parse_overrides(["train.resume=true", "rollout.stop=[a, b]", "model.reference_path=null"])
    assert flat == {"train.resume": True, "rollout.stop": ["a", "b"], "model.reference_path": None}


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'rollout.group_sise'; did you mean 'rollout.group_size'\?"):
        build_config({"model.path": "m", "rollout.group_sise": 4})
    with pytest.raises(ConfigError, match="keys of section 'optim': adam_eps, betas"):
        parse_overrides(["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="unknown config key 'trainer'"):
        load_config(None, [], base={"trainer": {"steps": 1}})


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.group_size=0", r"rollout.group_size=0 is not allowed: expected an int >= 1"),
        ("rollout.group_size=many", r"rollout.group_size='many' is not allowed: expected int"),
        ("algorithm.preset=ppo2", r"algorithm.preset='ppo2' is not allowed: expected one of dapo, deepseekmath"),
        ("rollout.temperature=0", r"rollout.temperature=0.0 is not allowed: expected a float > 0"),
        ("log.console=loud", r"log.console='loud' is not allowed: expected one of 'rich', 'plain', 'json', 'quiet'"),
        ("optim.betas=[0.9]", r"optim.betas=\[0.9\] is not allowed"),
        ("train.resume=maybe", r"train.resume='maybe' is not allowed: expected bool"),
        ("algorithm.dual_clip=0.5", r"algorithm.dual_clip=0.5 is not allowed: expected null or a float > 1"),
        ("dpo.pairs=both", r"dpo.pairs='both' is not allowed: expected one of 'samples', 'dataset'"),
        ("ppo.gamma=1.5", r"ppo.gamma=1.5 is not allowed: expected a float in \[0, 1\]"),
        ("reward.functions=[{name: x", r"override 'reward.functions=\[\{name: x': the value is not valid YAML \(line 1, column"),
    ],
)
def test_invalid_values_name_key_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.path=m", override])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.group_size=1"], r"rollout.group_size=1 is not allowed: expected an int >= 2 \(GRPO's group_norm"),
        (["algorithm.aggregation=mean"], r"algorithm.aggregation='mean' is not allowed: expected one of decoupled"),
        (["algorithm.advantage=best"], r"algorithm.advantage='best' is not allowed: expected one of batch_norm"),
        (["algorithm.policy_loss=ppo"], r"algorithm.policy_loss='ppo' is not allowed: expected one of clip, dual_clip"),
        (["algorithm.dual_clip=3"], r"algorithm.dual_clip=3.0 is not allowed: expected a bound > 1 exactly when algorithm.policy_loss=dual_clip"),
        (["algorithm.method=sft", "algorithm.mu=2"], r"algorithm.mu belongs to method grpo / ppo, not sft"),
        (["algorithm.method=grpo", "ppo.gamma=0.9"], r"ppo.gamma belongs to method ppo, not grpo"),
        (["algorithm.method=dpo", "algorithm.ref_reset_every=5"], r"algorithm.ref_reset_every belongs to method grpo / ppo, not dpo"),
        (["train.batch_size=4"], r"train.batch_size belongs to method dpo / ipo / rft / sft, not grpo"),
        (["algorithm.method=dpo", "offline.samples_per_prompt=1"], r"offline.samples_per_prompt=1 is not allowed: expected an int >= 2"),
        (["algorithm.method=dqn"], r"algorithm.method='dqn' is not allowed: expected one of dpo, grpo, ipo, online_rft, ppo, rft, sft"),
    ],
)
def test_method_rules_are_checked_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(None, ["model.path=m", *overrides]))


def test_settings_at_their_default_or_from_a_base_layer_are_not_the_users():
    config = load_config(None, ["model.path=m", "algorithm.method=sft", "algorithm.beta=0.04"], base={"algorithm": {"mu": 2}})
    assert "algorithm.beta" not in config.user_keys and "algorithm.mu" not in config.user_keys
    assert check_config(config).name == "sft"
    assert {"model.path", "algorithm.method"} <= config.user_keys


def test_model_path_is_required():
    with pytest.raises(ConfigError, match="model.path='' is not allowed: expected a model directory"):
        build_config({})


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: m\nrollout: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML: line 4, column 1: expected ',' or ']', but got '<stream end>'$") as error:
        load_config(bad)
    assert "\n" not in str(error.value)
    bad.write_text("model:\n  path: m\n  dtype: a: b\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML: line 3, column 11: mapping values are not allowed here$"):
        load_config(bad)
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: m\n")
    with pytest.raises(ConfigError, match="section 'model' must be a mapping"):
        load_config(flat)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(None, ["model.path=m", "algorithm.preset=dr_grpo", "rollout.stop=[END]"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(path) == config


def test_cli_config_prints_the_resolved_config(capsys):
    assert main(["config", "model.path=builtin:demo", "algorithm.preset=dapo"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["algorithm"]["eps_high"] == 0.28
    assert printed["model"]["path"] == "builtin:demo"


def test_cli_reports_a_bad_key_in_one_line_and_exit_code_2(capsys):
    assert main(["config", "model.path=m", "rollout.groupsize=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cohort: error: unknown config key 'rollout.groupsize'")
    assert "\n" not in err


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    """The shipped example configs load, pass the method rules, and name their own run directory."""
    config = load_config(str(path))
    check_config(config)
    assert config.train.out_dir.startswith("runs/") and config.train.out_dir != "runs/cohort"
