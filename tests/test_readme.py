"""README.md: one page, in the issue's order, and every code block marked runnable works as printed.

A fenced block whose previous non-blank line is an HTML comment starting ``<!-- runnable``
is run, in order, in one temporary folder: ```bash blocks with bash (``set -euo pipefail``),
```python blocks with this interpreter. ``pip install ... &&`` is dropped from a command
line (the test never installs anything), so the set-up command runs its search exactly as
printed. That is the synthetic path end to end: search, pareto, baselines, export,
load_exported, and a second call on the same input giving the same logits.

docs/configuration.md must equal what docs/make_configuration.py generates from evo_snn/config.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
PIP = re.compile(r"pip install [^&]*&&\s*")


def code_blocks(text: str) -> list[dict]:
    """Every fenced block of ``text``: {lang, code, runnable, line} (line: the opening fence's, 1-based)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        blocks.append({"lang": m.group(1), "code": "\n".join(lines[i + 1:j]) + "\n",
                       "runnable": before.startswith("<!-- runnable"), "line": i + 1})
        i = j + 1
    return blocks


def without_installs(code: str) -> str:
    """``code`` with every ``pip install ... &&`` removed (a line that only installs is dropped)."""
    out = []
    for line in code.splitlines():
        if line.lstrip().startswith("pip install") and "&&" not in line:
            continue
        out.append(PIP.sub("", line))
    return "\n".join(out) + "\n"


def test_readme_is_one_page_in_the_issues_order():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Set up (CPU, no GPU needed)", "## The first run", "## Next steps", "## Real data",
                        "## The run directory", "## Links"]
    blocks = code_blocks(text)
    setup = [b["code"].strip() for b in blocks[:2]]
    assert setup == [  # the two set-up commands, exactly as they have always been
        "pip install torch==2.13.0 torchvision==0.28.0 && pip install -e . && python -m evo_snn.search --dataset synthetic",
        'pip install torch==2.13.0 torchvision==0.28.0 && pip install -e ".[test]" && python -m pytest -m "not slow"',
    ]
    sample = next(b for b in blocks if b["lang"] == "text")
    assert len(sample["code"].splitlines()) == 6 and "gen 0/" in sample["code"]
    assert (ROOT / "docs" / "pareto.png").stat().st_size < 100_000 and "](docs/pareto.png)" in text
    # every relative link points at a file of the repository
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    # --pick expressions are quoted, and the reload snippet resets the neurons
    assert not re.search(r"--pick sparsity", text)
    assert "functional.reset_net(student)" in text


def test_the_docs_hold_what_left_the_readme():
    guide = (ROOT / "docs" / "guide.md").read_text()
    design = (ROOT / "docs" / "design.md").read_text()
    for heading in ("## Resume", "## Faults, clusters and the network", "## The GPU hot path: config keys",
                    "## Energy, counted the NeuroBench way", "## The protocol: does the search beat one-shot pruning?",
                    "## Usage", "## After the search: inspect, export, reload", "## The run directory"):
        assert heading in guide
    for heading in ("## Method", "## Fitness", "## KD variants", "## Layout"):
        assert heading in design
    assert "reset_net" in guide and not re.search(r"--pick sparsity", guide)


def _make_configuration():
    spec = importlib.util.spec_from_file_location("make_configuration", ROOT / "docs" / "make_configuration.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configuration_md_is_up_to_date_with_the_schema(tmp_path):
    import dataclasses

    from evo_snn.config import Config

    mod = _make_configuration()
    text = mod.render()
    assert (ROOT / "docs" / "configuration.md").read_text() == text, \
        "docs/configuration.md is out of date: run python docs/make_configuration.py"
    for section in dataclasses.fields(Config):  # every key of every section is listed
        sub = section.default_factory() if section.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            for f in dataclasses.fields(sub):
                assert f"| `{section.name}.{f.name}` |" in text
    # --check agrees, and writing is atomic (no temporary file left)
    out = tmp_path / "configuration.md"
    assert mod.main(["--out", str(out)]) == 0 and out.read_text() == text
    assert mod.main(["--check", "--out", str(out)]) == 0
    out.write_text(text + "stale\n")
    assert mod.main(["--check", "--out", str(out)]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["configuration.md"]


def test_runnable_readme_blocks_work_as_printed(tmp_path):
    blocks = [b for b in code_blocks(README.read_text()) if b["runnable"]]
    assert [b["lang"] for b in blocks] == ["bash", "bash", "python"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EVO_SNN_THREADS": "1", "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    outputs = []
    for b in blocks:
        if b["lang"] == "bash":
            cmd = ["bash", "-c", "set -euo pipefail\n" + without_installs(b["code"])]
        else:
            cmd = [sys.executable, "-c", b["code"]]
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"README.md block at line {b['line']} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        outputs.append(r)
    (run,) = list((tmp_path / "runs").iterdir())
    assert (run / "plots" / "pareto.png").is_file() and (run / "comparison.json").is_file()
    assert (tmp_path / "fronts.png").is_file()
    out = outputs[1].stdout
    assert "val_accuracy" in out and "global_long" in out and "exported " in out  # pareto, baselines, export
    assert len(list((run / "exported").iterdir())) >= 2  # the search's exports and the one by hand


def test_without_installs_keeps_the_command():
    assert without_installs("pip install a==1 b && pip install -e . && python -m x --y\n") == "python -m x --y\n"
    assert without_installs("pip install a\npython z\n") == "python z\n"


@pytest.mark.parametrize("text,expected", [("a\n<!-- runnable -->\n```bash\necho 1\n```\n", [True]),
                                            ("```bash\necho 1\n```\n<!-- runnable -->\n\n```python\nx=1\n```\n", [False, True])])
def test_code_blocks_see_the_marker(text, expected):
    assert [b["runnable"] for b in code_blocks(text)] == expected
