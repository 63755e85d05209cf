"""The README's install and test commands are exactly what CI runs first (CI may add steps after them)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_commands_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Install and test", 1)[1]
    (block,) = re.findall(r"```bash\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    readme_commands = block.strip().splitlines()
    ci_commands = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert len(readme_commands) == 2  # install, test
    assert ci_commands[:2] == readme_commands
    assert readme_commands[0].startswith("apt-get") and "chromium-driver" in readme_commands[0]
    assert "torch==2.13.0" in readme_commands[0] and "serve" in readme_commands[0]
    assert readme_commands[1].endswith("-m pytest")
