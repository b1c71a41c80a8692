"""Weights given by path (`--weights FILE.safetensors`, `load_weights(path)`): verified against the sha256 their
YAML records, refused without one unless trusted, and every broken pair is one line with its exit code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from zoo import api
from zoo.cli import main
from zoo.errors import ChecksumError, ZooValueError

SHIPPED = Path(api.__file__).resolve().parents[1] / "data" / "weights"
STEM = "moe_e8k2.m3-monthly-9ef9f0b0"


@pytest.fixture
def pair(tmp_path) -> Path:
    """A private copy of the shipped forecasting weights and their YAML; returns the .safetensors path."""
    for suffix in (".safetensors", ".yaml"):
        shutil.copy(SHIPPED / f"{STEM}{suffix}", tmp_path / f"w{suffix}")
    return tmp_path / "w.safetensors"


def _edit_yaml(weights: Path, change) -> None:
    path = weights.with_suffix(".yaml")
    doc = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(change(doc), sort_keys=False))


def _without(*keys):
    return lambda doc: {k: v for k, v in doc.items() if k not in keys}


@pytest.fixture
def series_csv(tmp_path) -> Path:
    path = tmp_path / "in.csv"
    path.write_text("id,value\n" + "".join(f"a,{100 + t % 12}\n" for t in range(30)))
    return path


def _one_line(capsys, code: int, expected: int, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == expected and len(lines) == 1 and "Traceback" not in err, err
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],  # tampered: one bit flipped
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b + b"\0" * 4096,  # oversized
    ],
    ids=["tampered", "truncated", "oversized"],
)
def test_damaged_file_is_a_checksum_mismatch(pair, capsys, series_csv, damage):
    pair.write_bytes(damage(pair.read_bytes()))
    with pytest.raises(ChecksumError) as err:
        api.load_weights(str(pair))
    assert err.value.exit_code == 4 and "sha256 mismatch" in str(err.value) and str(pair) in str(err.value)
    _one_line(capsys, main(["predict", "forecasting", str(series_csv), "--weights", str(pair)]), 4, "sha256 mismatch")
    _one_line(capsys, main(["eval", "forecasting", "--weights", str(pair)]), 4, str(pair))


def test_unrecorded_hash_is_refused_unless_trusted(pair, capsys, series_csv):
    _edit_yaml(pair, _without("weights_sha256"))
    line = _one_line(capsys, main(["predict", "forecasting", str(series_csv), "--weights", str(pair)]), 2,
                     "w.yaml", "records no weights_sha256", "--trust-unverified")
    assert "mismatch" not in line
    _one_line(capsys, main(["eval", "forecasting", "--weights", str(pair)]), 2, "--trust-unverified")
    code = main(["predict", "forecasting", str(series_csv), "--weights", str(pair), "--trust-unverified", "--json"])
    assert code == 0, capsys.readouterr().err
    assert api.load_weights(str(pair), trust_unverified=True).task.name == "forecasting"


def test_trusted_but_unreadable_file_is_still_one_line(pair):
    _edit_yaml(pair, _without("weights_sha256"))
    pair.write_bytes(pair.read_bytes()[:1000])
    with pytest.raises(ZooValueError, match="not a valid safetensors file") as err:
        api.load_weights(str(pair), trust_unverified=True)
    assert err.value.exit_code == 2


def test_trust_does_not_skip_a_recorded_hash(pair):
    pair.write_bytes(pair.read_bytes() + b"\0")
    with pytest.raises(ChecksumError):
        api.load_weights(str(pair), trust_unverified=True)


@pytest.mark.parametrize(
    ("break_yaml", "words"),
    [
        ("missing", "is not beside it"),
        (_without("config"), "missing 'config'"),
        (_without("task", "model_info"), "missing 'task', 'model_info'"),
        (lambda doc: {**doc, "model_info": [1, 2]}, "'model_info' must be a dict, got list"),
        (lambda doc: [doc], "must be a mapping, got list"),
        (lambda doc: {**doc, "weights_sha256": "abc"}, "weights_sha256='abc' is not a sha256"),
    ],
    ids=["no-yaml", "no-config", "no-task-info", "info-list", "not-mapping", "bad-hash"],
)
def test_broken_yaml_is_one_line_naming_the_file(pair, capsys, series_csv, break_yaml, words):
    if break_yaml == "missing":
        pair.with_suffix(".yaml").unlink()
    else:
        _edit_yaml(pair, break_yaml)
    with pytest.raises(ZooValueError) as err:
        api.load_weights(str(pair), trust_unverified=True)
    assert err.value.exit_code == 2 and words in str(err.value) and "w." in str(err.value)
    _one_line(capsys, main(["predict", "forecasting", str(series_csv), "--weights", str(pair)]), 2, words)


def test_missing_weights_file(tmp_path, capsys, series_csv):
    missing = tmp_path / "nope.safetensors"
    _one_line(capsys, main(["predict", "forecasting", str(series_csv), "--weights", str(missing)]), 2,
              f"{missing}: no such weights file")


def test_tensors_that_do_not_fit_the_yaml(pair, tmp_path):
    import safetensors.torch

    tensors = safetensors.torch.load_file(pair)
    tensors.pop(next(k for k in tensors if not k.startswith("model_info.")))
    safetensors.torch.save_file(tensors, pair, metadata={"format": "pt"})
    _edit_yaml(pair, _without("weights_sha256"))
    with pytest.raises(ZooValueError, match="do not fit the model its YAML describes: Missing key") as err:
        api.load_weights(str(pair), trust_unverified=True)
    assert "\n" not in str(err.value)


def test_the_flag_is_offered_where_weights_are_loaded(capsys):
    for argv in (["predict", "forecasting", "--help"], ["eval", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "--trust-unverified" in capsys.readouterr().out
