"""What a run was made with: project version, git commit, packages, platform, time.

Written into every run's ``metadata.json`` (see ``docs/python_api.md``) so that a
result can be traced to the code and the environment that produced it.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

DISTRIBUTION = "ev-grid-cosim"
SOURCE_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def project_version() -> str:
    """The installed distribution's version, else the one in ``pyproject.toml``."""
    pyproject = SOURCE_ROOT / "pyproject.toml"
    if pyproject.exists():  # a source checkout: its own version, even if another is installed
        import tomllib

        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (KeyError, tomllib.TOMLDecodeError):
            pass
    try:
        return importlib_metadata.version(DISTRIBUTION)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def git_commit() -> str | None:
    """``<sha>`` of the source checkout (``<sha>-dirty`` with local changes), None
    outside a git checkout or without git."""
    if not (SOURCE_ROOT / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def version_text() -> str:
    """``ev-grid-cosim 0.1.0 (git 1a2b3c4d5e6f)`` for ``--version``."""
    text = f"{DISTRIBUTION} {project_version()}"
    commit = git_commit()
    if commit:
        sha, _, dirty = commit.partition("-")
        text += f" (git {sha[:12]}{'-' + dirty if dirty else ''})"
    return text


@functools.cache
def package_versions() -> dict[str, str]:
    """Every installed distribution's version, by name (sorted)."""
    versions = {}
    for d in importlib_metadata.distributions():
        name = d.metadata["Name"]
        if name:
            versions[name] = d.version
    return dict(sorted(versions.items(), key=lambda kv: kv[0].lower()))


def platform_info() -> dict[str, object]:
    """Interpreter and machine the run was made on."""
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "system": platform.system(), "release": platform.release(), "machine": platform.machine(),
            "platform": platform.platform(), "cpu_count": os.cpu_count()}


def provenance() -> dict[str, object]:
    """The ``provenance`` block of ``metadata.json``."""
    return {
        "project": DISTRIBUTION,
        "version": project_version(),
        "git_commit": git_commit(),
        "run_started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else [],
        "platform": platform_info(),
        "packages": package_versions(),
    }
