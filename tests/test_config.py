"""Config: defaults, presets, YAML + dotted overrides, and errors that name the key and the allowed values."""

from __future__ import annotations

import pytest
import yaml

from cohort.algo import PRESETS
from cohort.cli import main
from cohort.config import FIELD_TYPES, ConfigError, build_config, load_config, parse_overrides

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
        assert key in FIELD_TYPES, key


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_applies_and_its_run_defaults_are_real_keys(name):
    for key in PRESETS[name].run_defaults:
        assert key in FIELD_TYPES, f"preset {name} sets unknown key {key}"
    config = build_config({"model.path": "m", "algorithm.preset": name})
    knobs = PRESETS[name].loss
    assert config.algorithm.aggregation == knobs.aggregation
    assert config.algorithm.beta == knobs.beta
    assert config.algorithm.eps_high == knobs.eps_high
    for key, value in PRESETS[name].run_defaults.items():
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
        ("rollout.group_size=1", r"rollout.group_size=1 is not allowed: expected an int >= 2"),
        ("rollout.group_size=many", r"rollout.group_size='many' is not allowed: expected int"),
        ("algorithm.preset=ppo2", r"algorithm.preset='ppo2' is not allowed: expected one of dapo, deepseekmath"),
        ("algorithm.aggregation=mean", r"algorithm.aggregation='mean' is not allowed: expected one of decoupled"),
        ("algorithm.ratio_level=group", r"expected one of 'token', 'sequence'"),
        ("rollout.temperature=0", r"rollout.temperature=0.0 is not allowed: expected a float > 0"),
        ("log.console=loud", r"log.console='loud' is not allowed: expected one of 'rich', 'plain', 'json', 'quiet'"),
        ("optim.betas=[0.9]", r"optim.betas=\[0.9\] is not allowed"),
        ("train.resume=maybe", r"train.resume='maybe' is not allowed: expected bool"),
        ("algorithm.dual_clip=0.5", r"algorithm.dual_clip=0.5 is not allowed: expected null or a float > 1"),
    ],
)
def test_invalid_values_name_key_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.path=m", override])


def test_model_path_is_required():
    with pytest.raises(ConfigError, match="model.path='' is not allowed: expected a model directory"):
        build_config({})


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
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
    assert main(["config", "model.path=m", "algorithm.preset=dapo"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["algorithm"]["eps_high"] == 0.28
    assert printed["model"]["path"] == "m"


def test_cli_reports_a_bad_key_in_one_line_and_exit_code_2(capsys):
    assert main(["config", "model.path=m", "rollout.groupsize=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cohort: error: unknown config key 'rollout.groupsize'")
    assert "\n" not in err
