"""The `rules test` / `rules validate` examples of docs/rules.md ("Testing rules"), run as
written: each file block is written to a directory, each console block's command runs
there (with tests/fixtures beside it) and must print exactly what the page shows."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from testpaths import FIXTURES

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
FILE = re.compile(r"<!-- rules-command file=(\S+) -->\n```yaml\n(.*?)```", re.DOTALL)
COMMAND = re.compile(r"<!-- rules-command exit=(\d) -->\n```console\n\$ ([^\n]*)\n(.*?)```",
                     re.DOTALL)


def files() -> dict[str, str]:
    return dict(FILE.findall(DOC.read_text()))


def commands() -> list[tuple[str, str, str]]:
    return COMMAND.findall(DOC.read_text())


def test_every_marker_is_read() -> None:
    assert len(files()) >= 3 and len(commands()) >= 3
    assert DOC.read_text().count("<!-- rules-command ") == len(files()) + len(commands())


@pytest.mark.parametrize(("code", "command", "output"), commands(),
                         ids=[c[1].split()[2] + "-" + c[1].split()[-1] for c in commands()])
def test_the_documented_command_prints_what_the_page_shows(
        tmp_path: Path, code: str, command: str, output: str) -> None:
    for name, text in files().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "fixtures").symlink_to(FIXTURES)
    words = shlex.split(command)
    assert words[0] == "nodefeatures"
    result = subprocess.run([sys.executable, "-m", "nodefeatures", *words[1:]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "100"})
    assert result.stdout == output, result.stderr
    assert result.returncode == int(code)
