"""tools/check_site.py finds what it should, on a tiny hand-written site."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_site  # noqa: E402

CHROMIUM = shutil.which("chromium")
LONG = "x = " + "1 + " * 40 + "1"
PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{head}
<style>body {{ margin: 0 }} article {{ max-width: 700px; margin: 0 auto }}
pre {{ overflow-x: auto }}</style></head><body>
<nav class="bd-sidebar-primary"><a class="reference internal"
 href="chapter.html">Chapter</a></nav>
<article class="bd-article"><section><h1>Title</h1>
{body}
</section></article></body></html>"""


def _png(path: Path, width: int, height: int) -> None:
    from PIL import Image

    Image.new("RGB", (width, height), "white").save(path)


@pytest.fixture
def site(tmp_path):
    html = tmp_path / "html"
    html.mkdir()
    _png(html / "plot.png", 500, 200)
    (html / "intro.html").write_text(
        PAGE.format(
            head='<link rel="stylesheet" href="_static/missing.css">',
            body='<nav class="language-switch">'
            '<a class="language-switch-link" href="zh/intro.html">'
            "中文</a></nav>"
            f"<pre>{LONG}</pre>"
            '<div style="width: 1000px">too wide</div>'
            '<div class="cell_output"><img src="plot.png"></div>',
        )
    )
    (html / "chapter.html").write_text(
        PAGE.format(
            head="",
            body='<nav class="language-switch">'
            '<a class="language-switch-link" href="chapter.html">'
            "English</a></nav><p>Fine. 交叉熵，写成中文。</p>",
        )
    )
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: intro\nchapters:\n- file: chapter\n"
    )
    return html, toc


def test_toc_is_read_with_yaml(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: intro\nparts:\n"
        "- caption: A\n  chapters:\n  - file: chapters/a.ipynb\n"
        "  - file: b\n    sections:\n    - file: b/c.md\n"
    )
    assert check_site.toc_documents(toc) == ["intro", "chapters/a", "b", "b/c"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_problems_are_found(site, tmp_path, capsys):
    html, toc = site
    shots = tmp_path / "shots"
    code = check_site.main(
        ["--html", str(html), "--toc", str(toc), "--screenshots", str(shots)]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "ok   chapter.html" in out
    assert "1280 px: code [Title] 'x = 1 + 1 + " in out  # scrolls sideways
    assert "reaches" not in out.split("code [Title]")[1].split("\n")[0]
    assert "390 px: the page scrolls sideways" in out
    assert "language link to a missing page" in out  # intro -> zh/intro
    assert "failed to load: Stylesheet html/_static/missing.css" in out
    assert "1.00 image px per CSS px" in out
    assert "no font record in the PNG" in out
    assert "shown 500 px wide in a 700 px column" in out
    assert "a light block on the dark theme (100%" in out  # opaque white
    assert (shots / "intro.jpg").exists()
    assert (shots / "intro-dark.jpg").exists()
    assert (shots / "report.json").exists()


def test_a_stalled_browser_fails_in_time(site, tmp_path):
    html, toc = site
    fake = tmp_path / "stalled-chromium"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "check_site.py"),
            "--html",
            str(html),
            "--toc",
            str(toc),
            "--screenshots",
            str(tmp_path / "shots"),
            "--chromium",
            str(fake),
            "--timeout",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 1
    assert "did not answer" in result.stdout
    assert time.monotonic() - started < 20


def test_chinese_drawn_without_a_cjk_font_fails():
    report = {
        "unrenderedMath": [],
        "mathElements": 0,
        "mjxContainers": 0,
        "remoteMathJax": [],
        "mathErrors": [],
        "rawDollars": False,
        "rawTexInLinks": [],
        "brokenImages": [],
        "exceptions": [],
        "failedLoads": [],
        "layout": {"column": 700, "blocks": []},
        "phone": None,
        "figures": [],
        "isBookPage": True,
        "languageLinks": [],
        "cjkProbe": 5,
        "cjkFonts": [{"familyName": "DejaVu Sans", "glyphCount": 5}],
    }
    problems = check_site.problems_of(report)
    assert any("not drawn in a CJK font (0 of 5" in p for p in problems)
    assert "no link to the other language (.language-switch)" in problems
    report["cjkFonts"] = [{"familyName": "Noto Sans CJK SC", "glyphCount": 5}]
    report["languageLinks"] = [(ROOT / "intro.md").as_uri()]
    assert check_site.problems_of(report) == []
