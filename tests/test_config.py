"""The config schema: validation, overrides, YAML round trips, one message per problem."""

import dataclasses

import pytest
import yaml

from clift.config import RunConfig, apply_overrides, load_config
from clift.errors import ConfigError
from clift.methods import METHODS, build_method_config


def test_defaults_are_valid():
    cfg = RunConfig()
    assert cfg.method.method_name() == "seq_lora"
    assert cfg.model.name == "smollm2-135m"


def test_unknown_keys_list_allowed_keys_and_suggest():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"trian": {}, "train": {"lrr": 1}})
    msg = str(err.value)
    assert "unknown key 'trian'. Did you mean 'train'?" in msg
    assert "Allowed keys in the top level: name, output_dir, seed" in msg and "method" in msg
    assert "unknown key 'train.lrr'. Did you mean 'lr'?" in msg
    assert "Allowed keys in train: epochs, max_steps" in msg


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"train": {"lr": -1, "batch_size": 0}, "eval": {"mode": "beam"}})
    assert len(err.value.problems) == 3
    msg = str(err.value)
    assert "train.lr must be > 0, got -1.0" in msg
    assert "eval.mode: got 'beam'; allowed values: 'generate', 'rank'" in msg


def test_type_errors_name_key_and_value():
    with pytest.raises(ConfigError, match=r"train.epochs: got 'many', expected an integer"):
        RunConfig.from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"log.progress: got 'maybe', expected true or false"):
        RunConfig.from_dict({"log": {"progress": "maybe"}})


def test_yaml_strings_for_numbers_are_coerced():
    cfg = RunConfig.from_dict({"train": {"lr": "1e-4"}, "data": {"order": 2}})
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.data.order == "2"


def test_unknown_method_suggests():
    with pytest.raises(ConfigError, match=r"unknown method 'seq_lroa'. Did you mean 'seq_lora'"):
        RunConfig.from_dict({"method": "seq_lroa"})


def test_method_keys_validated_against_method_config():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"method": {"name": "seq_lora", "rank": 4}})
    assert "unknown key 'method.rank'" in str(err.value)
    assert "Allowed keys in method: r, alpha, dropout, target_modules, name, preset" in str(err.value)
    with pytest.raises(ConfigError, match=r"r must be a positive integer, got r=0"):
        RunConfig.from_dict({"method": {"name": "per_task", "r": 0}})


def test_overrides_dotted_and_shorthands():
    raw = {"method": {"name": "seq_lora", "r": 4}, "train": {"lr": 1e-3}}
    out = apply_overrides(raw, ["train.lr=5e-4", "method.r=16", "benchmark=standard-proxy", "order=2", "model=tiny-t5"])
    cfg = RunConfig.from_dict(out)
    assert cfg.train.lr == pytest.approx(5e-4)
    assert cfg.method.r == 16
    assert cfg.data.benchmark == "standard-proxy" and cfg.data.order == "2"
    assert cfg.model.name == "tiny-t5"
    assert raw["train"]["lr"] == 1e-3  # input not mutated


def test_override_switching_method_rejects_stale_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'method\.r'"):
        RunConfig.from_dict(apply_overrides({"method": {"name": "seq_lora", "r": 4}}, ["method=seq_ft"]))


def test_override_without_equals_or_key():
    with pytest.raises(ConfigError, match="has no '='") as err:
        apply_overrides({}, ["train.lr", "=3"])
    assert len(err.value.problems) == 2 and "e.g. train.lr=1e-4" in str(err.value)


def test_override_rules_named_sections_and_non_sections():
    """The one parser's rules: a bare `model`/`method` name becomes {name: ...} when a key is set inside it;
    any other non-mapping part is an error naming the override; `key=` sets null."""
    raw = {"model": "tiny-llama", "method": "seq_lora", "data": "fixture", "train": {"lr": 1e-3}}
    out = apply_overrides(raw, ["model.dtype=bfloat16", "method.r=4", "train.max_steps="])
    assert out["model"] == {"name": "tiny-llama", "dtype": "bfloat16"}
    assert out["method"] == {"name": "seq_lora", "r": 4}
    assert out["train"] == {"lr": 1e-3, "max_steps": None}
    with pytest.raises(ConfigError, match=r"override 'data.order=2': 'data' is not a section of the config"):
        apply_overrides(raw, ["data.order=2"])


def test_suite_overrides_use_the_same_parser_without_shorthands():
    from clift.suite import apply_suite_overrides

    raw = {"base": {"model": "tiny-llama", "train": {"lr": 1e-3}}, "seeds": [1]}
    out = apply_suite_overrides(raw, ["seeds=[1,2]", "base.train.max_steps=2", "base.model.dtype=bfloat16"])
    assert out["seeds"] == [1, 2] and out["base"]["train"] == {"lr": 1e-3, "max_steps": 2}
    assert out["base"]["model"] == {"name": "tiny-llama", "dtype": "bfloat16"}
    # the run config's shorthands are not suite keys: `lr=` stays a top-level key (and load_suite rejects it)
    assert apply_suite_overrides({}, ["lr=0.1", "benchmark=tc"]) == {"lr": 0.1, "benchmark": "tc"}
    with pytest.raises(ConfigError, match=r"'seeds' is not a section of the suite file") as err:
        apply_suite_overrides(raw, ["seeds.first=3", "nothing"])
    assert "e.g. seeds=[1,2]" in str(err.value)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_run_config_round_trips_through_a_yaml_file(name, tmp_path):
    """Defaults → YAML file → load → equal, for every registered method (a new one is covered by registering it)."""
    cfg = RunConfig.from_dict(
        {
            "name": "x",
            "model": "tiny-t5",
            "method": {"name": name},
            "train": {"lr": 2e-4, "schedule": "linear"},
        }
    )
    assert cfg.method.method_name() == name
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()
    assert again.method == cfg.method and type(again.method) is METHODS.get(name).config_cls


def test_yaml_file_round_trip_keeps_non_default_values(tmp_path):
    cfg = RunConfig.from_dict({"method": {"name": "per_task", "r": 4}, "train": {"adam_betas": [0.8, 0.9]}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = load_config(path)
    assert again.method.r == 4 and again.train.adam_betas == (0.8, 0.9)
    assert again.to_dict() == cfg.to_dict()


def test_missing_and_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(lst)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_config_round_trips(name):
    entry = METHODS.get(name)
    cfg = build_method_config({"name": name})
    assert isinstance(cfg, entry.config_cls)
    again = build_method_config(cfg.to_dict())
    assert again == cfg
    for f in dataclasses.fields(entry.config_cls):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
