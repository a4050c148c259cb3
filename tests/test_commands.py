"""Every ``python -m evo_snn.<stage>`` command that the README and the docs show still
starts (issue 24: the package moved into sub-packages, the commands did not change).

Each command module named in README.md or docs/*.md is run with ``--help`` from a
temporary folder (the installed package, not the source tree on the path): it must exit
0 and print its usage line. What each command does is tested elsewhere (the README's
runnable blocks run search, pareto, baselines and export end to end).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python -m (evo_snn(?:\.[a-z_]+)*)")


def documented_commands() -> list[str]:
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return sorted({m.group(1) for p in texts for m in COMMAND.finditer(p.read_text(encoding="utf-8"))})


def test_the_docs_show_the_pipelines_commands():
    assert {"evo_snn.search", "evo_snn.pareto", "evo_snn.baselines", "evo_snn.export", "evo_snn.results",
            "evo_snn.data"} <= set(documented_commands())


@pytest.mark.parametrize("module", documented_commands())
def test_documented_command_starts(module, tmp_path):
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"python -m {module} --help failed:\n{r.stderr[-2000:]}"
    assert "usage:" in r.stdout, r.stdout[:500]


def test_load_exported_is_the_public_entry():
    code = "import evo_snn; from evo_snn import load_exported; print(load_exported.__module__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith("evo_snn.deploy")
