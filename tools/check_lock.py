"""Does the lock still match pyproject.toml? One line and exit 1 when it does not.

    python3 tools/check_lock.py [pyproject.toml] [requirements.lock]

`make install` runs this before installing anything, and tests/test_lock.py runs the same
check. Every requirement pyproject names (dependencies, the dev extras and uv's
constraint-dependencies) must be pinned in the lock at a version its specifier admits, and
the lock must hold no CUDA package (the CPU torch needs none). Standard library plus
`packaging` (pip's vendored copy when it is not installed), so it runs before the venv exists.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a bare interpreter: pip vendors the same library
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
# What the lock is for: the marker environment of Python 3.11 on linux x86_64.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
CUDA = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def requirements(pyproject: Path) -> list[Requirement]:
    """What pyproject asks for on the lock's target: dependencies, dev extras, constraints."""
    doc = tomllib.loads(pyproject.read_text())
    project = doc["project"]
    names = [
        *project.get("dependencies", []),
        *project.get("optional-dependencies", {}).get("dev", []),
        *doc.get("tool", {}).get("uv", {}).get("constraint-dependencies", []),
    ]
    reqs = [Requirement(n) for n in names]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**TARGET, "extra": "dev"})]


def pins(lock: Path) -> dict[str, str]:
    """name -> pinned version, from the `name==version \\` lines of a pip requirements file."""
    found = {}
    for line in lock.read_text().splitlines():
        if m := PIN.match(line):
            found[canonicalize_name(m[1])] = m[2]
    return found


def problems(pyproject: Path, lock: Path) -> list[str]:
    """Each way the lock disagrees with pyproject, one short phrase each; empty when it agrees."""
    pinned = pins(lock)
    out = []
    for req in requirements(pyproject):
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            out.append(f"{req.name} is not in it")
        elif not req.specifier.contains(Version(version), prereleases=True):
            out.append(f"it pins {req.name}=={version}, outside {req.name}{req.specifier}")
    out += [f"it pins the CUDA package {n}" for n in sorted(pinned) if CUDA.match(n)]
    return out


def main(argv: list[str]) -> None:
    pyproject = Path(argv[0]) if argv else ROOT / "pyproject.toml"
    lock = Path(argv[1]) if len(argv) > 1 else ROOT / "requirements.lock"
    found = problems(pyproject, lock) if lock.exists() else [f"{lock.name} is missing"]
    if found:  # one line on stderr, exit code 1
        sys.exit(
            f"{lock.name} does not match {pyproject.name} ({'; '.join(found)}): "
            "run `make lock` and commit both files"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
