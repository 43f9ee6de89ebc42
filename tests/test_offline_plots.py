"""`dvc plots show/diff` pages render without a network (issue 12): the project's `.dvc/config`
names a page template that inlines Vega, and the committed template is what the command writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.experiments.offline_plots import TEMPLATE_PATH, offline_page

ROOT = Path(__file__).resolve().parents[1]


def test_committed_template_is_current() -> None:
    committed = (ROOT / TEMPLATE_PATH).read_text(encoding="utf-8")
    assert committed == offline_page(), "run `python -m pipeline plots-template`"


def test_dvc_plots_page_loads_nothing_from_the_network(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(*args: str) -> None:
        subprocess.run(args, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    shutil.copyfile(ROOT / ".dvc" / "config", tmp_path / ".dvc" / "config")
    (tmp_path / TEMPLATE_PATH).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / TEMPLATE_PATH, tmp_path / TEMPLATE_PATH)
    points = [{"recall": r / 10, "precision": 1 - r / 20} for r in range(11)]
    (tmp_path / "pr.json").write_text(json.dumps(points))
    run("dvc", "plots", "show", "pr.json", "-x", "recall", "-y", "precision", "-o", "out")

    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", page), "a script is loaded from elsewhere"
    assert "cdn.jsdelivr" not in page
    assert "vegaEmbed('#pr_json'" in page  # DVC's plot, drawn by the inlined library
    assert page.count("<script") == 2  # the inlined bundle and DVC's one plot
