"""The lock and pyproject.toml agree, and the check `make install` runs can tell when not."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
CHECK = ROOT / "tools" / "check_lock.py"

_spec = importlib.util.spec_from_file_location("check_lock", CHECK)
assert _spec and _spec.loader
check_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_lock)


def run_check(*args: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *map(str, args)], capture_output=True, text=True
    )


def test_lock_matches_pyproject():
    assert check_lock.problems(ROOT / "pyproject.toml", LOCK) == []
    run = run_check()
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_a_mismatched_pair_fails_in_one_line(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\nversion = "0"\n'
        'dependencies = ["kfp>=2.17,<2.18", "pandas>=2.2", "brand-new-dep>=1"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=9"]\n'
    )
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "kfp==2.18.0 \\\n    --hash=sha256:00\n"
        "pandas==2.2.3 \\\n    --hash=sha256:11\n    # via x (pyproject.toml)\n"
        "pytest==8.4.0 \\\n    --hash=sha256:22\n"
        "nvidia-cublas==13.0.0 \\\n    --hash=sha256:33\n"
    )
    assert check_lock.problems(pyproject, lock) == [
        "it pins kfp==2.18.0, outside kfp<2.18,>=2.17",
        "brand-new-dep is not in it",
        "it pins pytest==8.4.0, outside pytest>=9",
        "it pins the CUDA package nvidia-cublas",
    ]
    run = run_check(pyproject, lock)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "run `make lock`" in run.stderr, run.stderr


def test_torch_is_the_cpu_build():
    pins = check_lock.pins(LOCK)
    assert pins["torch"].endswith("+cpu")
    assert not [n for n in pins if n.startswith("nvidia-") or n == "triton"]
    # one file only: the CPU wheel (PyPI's torch files, CUDA builds, would add hashes)
    block = re.search(r"^torch==\S+ \\\n((?:    --hash=\S+.*\n)+)", LOCK.read_text(), re.M)
    assert block and len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block[1])) == 1


def test_the_dockerfile_installs_the_locks_pip_and_torch_first():
    pins = check_lock.pins(LOCK)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"pip install --no-cache-dir pip=={pins['pip']}" in dockerfile
    assert f"torch=={pins['torch']}" in dockerfile
