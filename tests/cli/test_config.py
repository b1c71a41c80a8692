"""Recipes ⇄ typed configs: precedence, ``base:``, ``--set`` parsing, validation messages, smoke, hashing."""

from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path

import pytest
import yaml

import zoo.config
from zoo.config import (
    check_trainer_kwargs,
    config_sha256,
    from_dict,
    load_recipe,
    parse_override,
    read_yaml,
    recipe_names,
    repo_root,
    resolve_config,
    to_dict,
)
from zoo.errors import ZooValueError
from zoo.tasks.forecasting.config import DataConfig, ForecastingConfig, ModelConfig

TASK = "forecasting"
REAL_RECIPES = ("dense_m3-monthly", "moe_e8k2_m3-monthly", "snaive_m3-monthly")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def resolve(recipe=None, config_file=None, overrides=(), smoke=False):
    return resolve_config(ForecastingConfig, TASK, recipe, config_file, list(overrides), smoke)


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A private configs/ tree: recipes for the forecasting task are written into the returned folder."""
    root = tmp_path / "configs"
    (root / TASK).mkdir(parents=True)
    monkeypatch.setattr(zoo.config, "configs_dir", lambda: root)
    return root / TASK


# ------------------------------------------------------------------------------------------------ precedence


def test_no_recipe_gives_the_task_dataclass_defaults():
    cfg, smoke = resolve()
    assert cfg == ForecastingConfig()
    assert smoke == {}
    assert cfg.moe.num_experts == 8 and cfg.moe.d_hidden == 64 and cfg.trainer == {"max_epochs": 20}


def test_precedence_defaults_base_recipe_file_set(configs, tmp_path):
    write(
        configs / "parent.yaml",
        """\
        description: the base
        data: {lookback: 10, batch_size: 32, period: QUARTERLY}
        model: {d_model: 16, num_layers: 2}
        optim: {lr: 0.01, scheduler: cosine, warmup_steps: 5, weight_decay: 0.1}
        moe: {num_experts: 4, k: 1, d_hidden: 8}
        trainer: {max_epochs: 3, gradient_clip_val: 0.5}
        seed: 1
        """,
    )
    write(
        configs / "child.yaml",
        """\
        description: the child
        base: parent
        data: {batch_size: 64}
        model: {d_model: 32}
        optim: {lr: 0.02, weight_decay: 0.2}
        trainer: {max_epochs: 4}
        seed: 2
        """,
    )
    file = write(tmp_path / "over.yaml", "model: {d_model: 48}\noptim: {weight_decay: 0.3}\nseed: 3\n")

    # Each layer alone over the previous ones.
    base_only, _ = resolve("parent")
    assert (base_only.data.lookback, base_only.data.batch_size, base_only.model.d_model) == (10, 32, 16)
    assert base_only.data.horizon is None and base_only.data.source == "m3"  # untouched → dataclass defaults
    child, _ = resolve("child")
    assert child.data.lookback == 10  # inherited from base
    assert child.data.period == "QUARTERLY"
    assert child.data.batch_size == 64  # recipe over its base
    assert child.model.d_model == 32 and child.model.num_layers == 2
    assert child.optim.lr == 0.02 and child.optim.scheduler == "cosine" and child.optim.warmup_steps == 5
    assert child.trainer == {"max_epochs": 4, "gradient_clip_val": 0.5}  # nested mappings merge key by key
    assert child.seed == 2

    with_file, _ = resolve("child", file)
    assert with_file.model.d_model == 48 and with_file.model.num_layers == 2  # file over recipe, merged
    assert with_file.optim.weight_decay == 0.3 and with_file.optim.lr == 0.02
    assert with_file.seed == 3

    full, _ = resolve("child", file, ["seed=4", "model.d_model=56", "trainer.max_epochs=5"])
    assert full.seed == 4 and full.model.d_model == 56  # --set over the file
    assert full.trainer == {"max_epochs": 5, "gradient_clip_val": 0.5}
    assert full.data.batch_size == 64 and full.data.lookback == 10 and full.moe.num_experts == 4


def test_real_dense_recipe_inherits_from_its_base():
    moe, moe_smoke = resolve("moe_e8k2_m3-monthly")
    dense, dense_smoke = resolve("dense_m3-monthly")
    assert moe.model.arch == "moe" and dense.model.arch == "dense"
    assert dataclasses.replace(dense, model=moe.model) == moe  # only model.arch differs
    assert dense_smoke == moe_smoke == {"data.max_series": 60, "trainer.max_epochs": 2}
    merged = load_recipe(TASK, "dense_m3-monthly")
    assert "base" not in merged and merged["model"]["arch"] == "dense"


def test_a_base_with_its_own_base_is_refused(configs):
    write(configs / "grand.yaml", "seed: 1\n")
    write(configs / "parent.yaml", "base: grand\nseed: 2\n")
    write(configs / "child.yaml", "base: parent\nseed: 3\n")
    with pytest.raises(ZooValueError, match="one level of base"):
        resolve("child")
    assert resolve("parent")[0].seed == 2  # one level is fine


def test_a_missing_base_names_the_file(configs):
    write(configs / "child.yaml", "base: nowhere\n")
    with pytest.raises(ZooValueError, match=r"nowhere\.yaml: no such file"):
        resolve("child")


def test_later_set_wins_and_nested_set_keeps_siblings():
    cfg, _ = resolve("moe_e8k2_m3-monthly", overrides=["seed=1", "seed=2", "optim.lr=0.5"])
    assert cfg.seed == 2
    assert cfg.optim.lr == 0.5 and cfg.optim.scheduler == "cosine" and cfg.optim.warmup_steps == 20


def test_partial_section_keeps_the_task_defaults():
    cfg, _ = resolve(overrides=["moe.router=top_k"])
    assert cfg.moe == ForecastingConfig().moe


def test_partial_trainer_keeps_the_default_max_epochs():
    cfg, _ = resolve(overrides=["trainer.gradient_clip_val=1.0"])
    assert cfg.trainer == {"max_epochs": 20, "gradient_clip_val": 1.0}


# ------------------------------------------------------------------------------------------------ --set values


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("seed=7", "seed", 7),
        ("optim.lr=1.0e-4", "optim.lr", 1e-4),
        ("moe.shared_gated=true", "moe.shared_gated", True),
        ("data.path=null", "data.path", None),
        ("data.path=~", "data.path", None),
        ("data.period='12'", "data.period", "12"),
        ('data.period="true"', "data.period", "true"),
        ("optim.betas=[0.8, 0.95]", "optim.betas", [0.8, 0.95]),
        ("moe.router_kwargs={p: 0.5}", "moe.router_kwargs", {"p": 0.5}),
        ("data.path=a=b", "data.path", "a=b"),
        (" data.path = x ", "data.path", "x"),
        ("data.path=", "data.path", ""),
    ],
)
def test_parse_override_reads_yaml_values(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("text", ["optim.lr=1e-4", "optim.lr=3E5"])
def test_exponent_floats_without_a_dot_are_floats(text):
    cfg, _ = resolve(overrides=[text])
    assert cfg.optim.lr == float(text.partition("=")[2])


@pytest.mark.parametrize("text", ["noequals", "=3", " =3"])
def test_parse_override_needs_key_and_value(text):
    with pytest.raises(ZooValueError, match="expected KEY=VALUE"):
        parse_override(text)


def test_parse_override_rejects_broken_yaml():
    with pytest.raises(ZooValueError, match="not valid YAML"):
        parse_override("optim.betas=[0.9, 0.99")


def test_set_values_are_converted_to_the_field_types():
    cfg, _ = resolve(
        "moe_e8k2_m3-monthly",
        overrides=[
            "optim.lr=1",  # int for float
            "optim.betas=[0.8, 0.95]",  # list for tuple
            "data.horizon=6",
            "data.horizon=null",  # Optional back to None
            "data.period='12'",
            "moe.router_kwargs={p: 0.5}",
            "moe.z_coef=0.001",
        ],
    )
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.8, 0.95) and isinstance(cfg.optim.betas, tuple)
    assert cfg.data.horizon is None
    assert cfg.data.period == "12"
    assert cfg.moe.router_kwargs == {"p": 0.5}
    assert cfg.moe.z_coef == 0.001


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.lookback='15'", r"data\.lookback='15' has the wrong type; expected int"),
        ("data.lookback=true", r"data\.lookback=True has the wrong type; expected int"),
        ("seed=false", r"seed=False has the wrong type; expected int"),
        ("seed=1.5", r"seed=1\.5 has the wrong type; expected int"),
        ("data.horizon=true", r"data\.horizon=True has the wrong type"),
        ("data.path=5", r"data\.path=5 has the wrong type"),
        ("optim.lr=fast", r"optim\.lr='fast' has the wrong type; expected float"),
        ("optim.betas=[0.9]", r"optim\.betas=\[0\.9\] must have 2 items"),
        ("optim.betas=[0.9, 0.99, 0.999]", r"must have 2 items"),
        ("optim.betas=0.9", r"optim\.betas=0\.9 has the wrong type; expected a list"),
        ("optim.betas=[0.9, x]", r"optim\.betas\[1\]='x' has the wrong type"),
        ("data=5", r"data must be a mapping of DataConfig fields"),
        ("data.lookback.x=1", r"data\.lookback=\{'x': 1\} has the wrong type"),
        ("trainer=[1]", r"trainer=\[1\] has the wrong type; expected a mapping"),
        ("moe.router_kwargs=3", r"moe\.router_kwargs=3 has the wrong type; expected a mapping"),
        ("model.arch=densee", r"model\.arch='densee' is not allowed"),
        ("model.d_model=0", r"model\.d_model=0 is not allowed"),
    ],
)
def test_wrong_types_and_values_are_one_clear_error(override, message):
    with pytest.raises(ZooValueError, match=message) as err:
        resolve("moe_e8k2_m3-monthly", overrides=[override])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("moe.num_expert=4", r"unknown config key 'moe\.num_expert'; did you mean 'moe\.num_experts'\?"),
        ("data.lookbak=4", r"unknown config key 'data\.lookbak'; did you mean 'data\.lookback'\?"),
        ("modle.arch=dense", r"unknown config key 'modle'; did you mean 'model'\?"),
        ("trainer.max_epoch=1", r"unknown config key 'trainer\.max_epoch'; did you mean 'trainer\.max_epochs'\?"),
        ("trainer.gradient_clip=1", r"did you mean 'trainer\.gradient_clip_val'\?"),
    ],
)
def test_unknown_keys_suggest_the_closest(override, message):
    with pytest.raises(ZooValueError, match=message):
        resolve("moe_e8k2_m3-monthly", overrides=[override])


def test_unknown_key_without_a_close_match_lists_the_known_ones():
    with pytest.raises(ZooValueError, match=r"unknown config key 'data\.zzzzzz' \(known: source, period") as err:
        resolve(overrides=["data.zzzzzz=1"])
    assert "did you mean" not in str(err.value)


def test_trainer_keys_are_checked_against_lightning_trainer():
    import inspect

    import lightning as L

    allowed = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    for key in ("max_epochs", "max_steps", "gradient_clip_val", "limit_train_batches", "precision"):
        assert key in allowed
    check_trainer_kwargs({k: None for k in ("max_epochs", "max_steps", "gradient_clip_val", "precision")})
    cfg, _ = resolve("moe_e8k2_m3-monthly", overrides=["trainer.limit_train_batches=0.5", "trainer.max_steps=3"])
    assert cfg.trainer == {"max_epochs": 20, "gradient_clip_val": 1.0, "limit_train_batches": 0.5, "max_steps": 3}
    with pytest.raises(ZooValueError, match="unknown config key 'trainer.self'"):
        check_trainer_kwargs({"self": 1})
    with pytest.raises(ZooValueError, match=r"'trainer\.epochs_max'") as err:
        check_trainer_kwargs({"max_epochs": 1, "epochs_max": 1})
    assert str(err.value).startswith("unknown config key")


def test_from_dict_checks_every_level():
    cfg = from_dict(ForecastingConfig, {"data": {"lookback": 12}, "model": {"arch": "dense"}})
    assert cfg.data == DataConfig(lookback=12) and cfg.model == ModelConfig(arch="dense")
    with pytest.raises(ZooValueError, match=r"unknown config key 'data\.look_back'; did you mean 'data\.lookback'"):
        from_dict(ForecastingConfig, {"data": {"look_back": 12}})
    with pytest.raises(ZooValueError, match="model must be a mapping of ModelConfig fields, got 'dense'"):
        from_dict(ForecastingConfig, {"model": "dense"})


# ------------------------------------------------------------------------------------------------ YAML files


def test_malformed_config_file_names_the_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", "data:\n  lookback: 12\n  period: [MONTHLY\n  source: m3\n")
    with pytest.raises(ZooValueError) as err:
        resolve(config_file=bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: line 4 malformed YAML"), msg
    assert "\n" not in msg


def test_malformed_recipe_names_the_file_and_line(configs):
    bad = write(configs / "broken.yaml", "seed: 1\nmodel:\n  arch: moe\n   d_model: 3\n")
    with pytest.raises(ZooValueError, match=rf"^{bad}: line 4 malformed YAML"):
        resolve("broken")


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just text\n", "str"), ("3\n", "int")])
def test_non_mapping_yaml_is_refused(tmp_path, configs, text, kind):
    file = write(tmp_path / "list.yaml", text)
    with pytest.raises(ZooValueError, match=rf"{file}: expected a YAML mapping at the top level, got {kind}"):
        resolve(config_file=file)
    write(configs / "listy.yaml", text)
    with pytest.raises(ZooValueError, match="expected a YAML mapping at the top level"):
        resolve("listy")


def test_empty_config_file_changes_nothing(tmp_path):
    empty = write(tmp_path / "empty.yaml", "")
    assert read_yaml(empty) == {}
    assert resolve("moe_e8k2_m3-monthly", empty)[0] == resolve("moe_e8k2_m3-monthly")[0]


def test_missing_config_file(tmp_path):
    with pytest.raises(ZooValueError, match=r"nope\.yaml: no such file"):
        resolve(config_file=tmp_path / "nope.yaml")


def test_a_date_in_a_config_file_is_a_type_error_not_a_crash(tmp_path):
    file = write(tmp_path / "date.yaml", "data:\n  period: 2024-01-01\n")
    with pytest.raises(ZooValueError, match="wrong type"):
        resolve(config_file=file)


def test_unknown_recipe_suggests_the_closest():
    with pytest.raises(ZooValueError) as err:
        resolve("moe_e8k2_m3-montly")
    msg = str(err.value)
    assert msg.startswith("unknown recipe 'moe_e8k2_m3-montly' for task 'forecasting'")
    assert "did you mean 'moe_e8k2_m3-monthly'?" in msg
    for name in REAL_RECIPES:
        assert name in msg
    with pytest.raises(ZooValueError, match=r"unknown recipe 'x' for task 'nosuchtask'.*known: none"):
        resolve_config(ForecastingConfig, "nosuchtask", "x")


def test_recipe_names_lists_the_yaml_files():
    on_disk = sorted(p.stem for p in (repo_root() / "configs" / TASK).glob("*.yaml"))
    assert recipe_names(TASK) == on_disk and set(REAL_RECIPES) <= set(on_disk)
    assert recipe_names("nosuchtask") == []


# ------------------------------------------------------------------------------------------------ smoke


def test_smoke_overrides_apply_only_with_smoke():
    full, smoke = resolve("moe_e8k2_m3-monthly")
    tiny, smoke2 = resolve("moe_e8k2_m3-monthly", smoke=True)
    assert smoke == smoke2 == {"data.max_series": 60, "trainer.max_epochs": 2}
    assert full.data.max_series is None and full.trainer["max_epochs"] == 20
    assert tiny.data.max_series == 60 and tiny.trainer == {"max_epochs": 2, "gradient_clip_val": 1.0}
    assert dataclasses.replace(tiny, data=full.data, trainer=full.trainer) == full  # nothing else changes
    # --set still wins over the smoke overrides.
    tighter, _ = resolve("moe_e8k2_m3-monthly", overrides=["data.max_series=12"], smoke=True)
    assert tighter.data.max_series == 12 and tighter.trainer["max_epochs"] == 2


def test_smoke_of_base_and_recipe_merge(configs):
    write(configs / "parent.yaml", "smoke:\n  data.max_series: 10\n  trainer.max_epochs: 2\n")
    write(configs / "child.yaml", "base: parent\nsmoke:\n  trainer.max_epochs: 1\n  seed: 5\n")
    cfg, smoke = resolve("child", smoke=True)
    assert smoke == {"data.max_series": 10, "trainer.max_epochs": 1, "seed": 5}
    assert (cfg.data.max_series, cfg.trainer["max_epochs"], cfg.seed) == (10, 1, 5)
    plain, _ = resolve("child")
    assert (plain.data.max_series, plain.trainer, plain.seed) == (None, {"max_epochs": 20}, 0)


def test_smoke_overrides_are_validated_when_used(configs):
    write(configs / "typo.yaml", "smoke:\n  data.max_seriess: 10\n")
    assert resolve("typo")[0] == ForecastingConfig()
    with pytest.raises(ZooValueError, match="did you mean 'data.max_series'"):
        resolve("typo", smoke=True)
    write(configs / "notmap.yaml", "smoke: [1, 2]\n")
    with pytest.raises(ZooValueError, match="smoke: must map dotted keys to values"):
        resolve("notmap")


# ------------------------------------------------------------------------------------------------ hashing / dicts


def test_config_sha256_is_stable_and_sensitive():
    a, _ = resolve("moe_e8k2_m3-monthly")
    b, _ = resolve("moe_e8k2_m3-monthly")
    assert a is not b and a == b
    digest = config_sha256(a)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert config_sha256(b) == digest
    assert config_sha256(from_dict(ForecastingConfig, to_dict(a))) == digest
    for change in ("seed=1", "optim.lr=0.002", "moe.k=1", "trainer.max_epochs=21", "data.path=x"):
        assert config_sha256(resolve("moe_e8k2_m3-monthly", overrides=[change])[0]) != digest, change
    # dict key order inside trainer does not matter
    c = dataclasses.replace(a, trainer={"gradient_clip_val": 1.0, "max_epochs": 20})
    assert list(c.trainer) != list(a.trainer) and config_sha256(c) == digest


@pytest.mark.parametrize("recipe", REAL_RECIPES)
def test_to_dict_from_dict_round_trip(recipe):
    cfg, _ = resolve(recipe, overrides=["optim.betas=[0.8, 0.95]", "moe.router_kwargs={p: 0.5}"])
    data = to_dict(cfg)
    assert data["optim"]["betas"] == [0.8, 0.95]  # tuples become lists
    assert set(data) == {f.name for f in dataclasses.fields(ForecastingConfig)}
    again = from_dict(ForecastingConfig, yaml.safe_load(yaml.safe_dump(data)))
    assert again == cfg and isinstance(again.optim.betas, tuple)
    assert to_dict(again) == data
    assert all(not isinstance(v, float) or math.isfinite(v) for v in data["optim"].values() if v is not None)


def test_the_static_trainer_keys_are_lightnings():
    import inspect

    import lightning as L

    from zoo.config import TRAINER_KEYS

    assert set(inspect.signature(L.Trainer.__init__).parameters) - {"self"} == TRAINER_KEYS
