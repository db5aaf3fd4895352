"""The docs stay true to the code: the configuration reference is the generator's output, the
README stays short, and every relative link lands on a file and heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from emotitrack.settings_reference import (
    COMMAND,
    DOCS_PAGE,
    PARTS,
    Part,
    configuration_reference,
    environment_variables,
    part_section,
)

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 200
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens, repeats
    numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(document: Path) -> list[str]:
    """Relative links (and their #anchors) in ``document`` that point at nothing."""
    prose = CODE_SPAN.sub("", FENCE.sub("", document.read_text()))
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {path.name})")
    return broken


def test_configuration_reference_is_the_generators_output() -> None:
    assert DOCS_PAGE.read_text() == configuration_reference(), (
        f"{DOCS_PAGE.relative_to(REPO)} is out of date: run `.venv/bin/{COMMAND}`"
    )


def test_every_setting_says_what_it_is() -> None:
    undescribed = [
        f"{part.module}: {name}"
        for part in PARTS
        for name, field in part.settings.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not undescribed, f"add a Field(description=...) to {undescribed}"


def test_the_reference_names_aliases_and_every_field() -> None:
    page = configuration_reference()
    assert "`MLFLOW_TRACKING_URI` or `EMOTITRACK_TRACKING_URI`" in page
    for part in PARTS:
        for name, field in part.settings.model_fields.items():
            for variable in environment_variables(part.settings, name, field):
                assert f"`{variable}`" in page, variable


def test_a_secret_default_is_never_written() -> None:
    class WithSecret(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="EMOTITRACK_")
        token: SecretStr = Field(SecretStr("hunter2"), description="A token.")

    section = "\n".join(part_section(Part("Test", "x.py", WithSecret, "tests")))
    assert "`EMOTITRACK_TOKEN`" in section
    assert "hunter2" not in section
    assert "set (hidden)" in section


def test_readme_is_at_most_200_lines() -> None:
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files_and_headings(document: Path) -> None:
    assert not broken_links(document), f"{document.relative_to(REPO)}: {broken_links(document)}"


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## `summary.json` fields\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#summaryjson-fields) [ok](#page) [web](https://example.com)\n"
        "[gone](missing.md) [no heading](other.md#nowhere) `[code](ignored.md)`\n"
        "```\n[fenced](ignored.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md (no such file)",
        "other.md#nowhere (no heading #nowhere in other.md)",
    ]
