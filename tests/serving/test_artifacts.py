"""Loading a version directory: sha256 verified, tampering refuses to start."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from driftloop.errors import IntegrityError
from serving.__main__ import main
from serving.artifacts import load_dir, verify_dir
from tests.serving.conftest import Trained


def test_loads_verified_dir_with_rules(bike: Trained) -> None:
    b = load_dir(bike.dir)
    assert b.version == 1 and b.rules is not None
    assert [r.name for r in b.rules.rules] == ["storm_peak", "freezing"]
    assert b.schema.names == bike.spec.features


def test_tampered_file_refuses_to_start(
    bike: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "models"
    shutil.copytree(bike.dir, copy)
    (copy / "preprocessor.json").write_text((copy / "preprocessor.json").read_text() + " ")
    with pytest.raises(IntegrityError, match="preprocessor.json"):
        verify_dir(copy)
    assert main(["--model_dir", str(copy), "--model_name", "bike"]) == 1
    assert "sha256" in capsys.readouterr().err


def test_missing_file_refuses(bike: Trained, tmp_path: Path) -> None:
    copy = tmp_path / "models"
    shutil.copytree(bike.dir, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(IntegrityError, match="model.safetensors"):
        load_dir(copy)
