"""The Chinese edition: its catalogues, the checker that guards them, and
the Sphinx extension that builds it (_ext/book_i18n.py).

The catalogues must be complete, clean and faithful to the markup of the
English (tools/check_translations.py); the checker must catch each way a
translation goes wrong; and a Chinese build must warn about a message left
untranslated, which is what makes an untranslated English edit fail
``make test`` (its build step runs with warnings as errors).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import polib
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "_ext"))

import check_site  # noqa: E402
import check_translations  # noqa: E402
from book_i18n import needs_translation  # noqa: E402

CATALOGUES = ROOT / "locales" / "zh_CN" / "LC_MESSAGES"


def _toc_documents() -> list[str]:
    return check_site.toc_documents(ROOT / "_toc.yml")


@pytest.mark.parametrize("doc", _toc_documents())
def test_every_page_has_a_clean_complete_catalogue(doc):
    path = CATALOGUES / f"{doc}.po"
    assert path.exists(), f"no catalogue for {doc}: run `make translations`"
    problems = check_translations.check_catalogue(path)
    assert not problems, "\n".join(problems[:20])


def test_no_catalogue_without_a_page():
    docs = set(_toc_documents())
    stray = [
        p.relative_to(CATALOGUES).with_suffix("").as_posix()
        for p in CATALOGUES.rglob("*.po")
        if p.relative_to(CATALOGUES).with_suffix("").as_posix() not in docs
    ]
    assert not stray


def test_the_catalogues_are_substantial():
    # a catalogue emptied by a bad extraction would pass the checks above
    total = sum(len(polib.pofile(str(p))) for p in CATALOGUES.rglob("*.po"))
    chapter_1 = polib.pofile(
        str(CATALOGUES / "chapters" / "01-binary-cross-entropy.po")
    )
    assert total > 900
    assert "二分类交叉熵" in chapter_1.find("Binary cross-entropy").msgstr


# -- the checker catches each kind of mistake --------------------------------

GOOD = (
    "The **binary cross-entropy** of $p_1$ is eq. {eq}`eq-bin-ce`; see "
    "{ref}`the note <app-note>` and `torch.sigmoid`.",
    "$p_1$ 的**二分类交叉熵**即式 {eq}`eq-bin-ce`；参见{ref}`笔记 "
    "<app-note>`和 `torch.sigmoid`。",
)


def test_a_faithful_translation_passes():
    assert check_translations.check_entry(*GOOD) == []


@pytest.mark.parametrize(
    "broken, problem",
    [
        ("", "not translated"),
        (GOOD[1].replace("$p_1$", "$p_0$"), "math"),
        (GOOD[1].replace("eq-bin-ce", "eq-bin-kl"), "roles"),
        (GOOD[1].replace("<app-note>", "<app-note-text>"), "roles"),
        (GOOD[1].replace("`torch.sigmoid`", "`torch.exp`"), "inline code"),
        # bold next to full-width punctuation does not parse as bold
        (
            GOOD[1].replace("**二分类交叉熵**", "**“二分类交叉熵”**"),
            "parsed spans",
        ),
        (
            "The binary cross-entropy of $p_1$ is eq. {eq}`eq-bin-ce`; see "
            "{ref}`the note <app-note>` and `torch.sigmoid`.",
            "no Chinese",
        ),
    ],
)
def test_a_broken_translation_fails(broken, problem):
    problems = check_translations.check_entry(*GOOD[:1], broken)
    assert any(p.startswith(problem) for p in problems), problems


def test_a_heading_that_parses_as_a_list_fails():
    problems = check_translations.check_entry(
        "1. What $p$ is", "1. $p$ 是什么"
    )
    assert any("one paragraph" in p for p in problems)
    assert (
        check_translations.check_entry("1. What $p$ is", "1\\. $p$ 是什么")
        == []
    )


def test_math_inside_inline_code_is_code():
    msgid = "numbered with `\\tag{1}\\label{eq1}`, and cited as `\\ref{eq1}`"
    assert (
        check_translations.check_entry(
            msgid, "用 `\\tag{1}\\label{eq1}` 编号，以 `\\ref{eq1}` 引用"
        )
        == []
    )


def test_a_name_may_stay_as_it_is():
    assert check_translations.check_entry("PyTorch", "PyTorch") == []


def test_fuzzy_and_obsolete_entries_fail(tmp_path):
    catalogue = polib.POFile()
    catalogue.append(polib.POEntry(msgid="Summary", msgstr="小结"))
    catalogue.append(
        polib.POEntry(msgid="Exercises", msgstr="练习", flags=["fuzzy"])
    )
    catalogue.append(
        polib.POEntry(msgid="Gone", msgstr="已删除", obsolete=True)
    )
    path = tmp_path / "page.po"
    catalogue.save(str(path))
    problems = check_translations.check_catalogue(path)
    assert len(problems) == 2
    assert "fuzzy" in problems[0] and "obsolete" in problems[1]


def test_what_needs_translation():
    assert needs_translation("The loss of sample $n$")
    assert needs_translation("交叉熵")
    assert not needs_translation("{func}`cross_entropy`")
    assert not needs_translation("`X`, `(N, D)`")
    assert needs_translation("`X` (shape `(N, D)`)")
    assert not needs_translation("$\\mathrm{CE}_n$, {eq}`eq-bin-ce`")


# -- the extension: a Chinese build warns about what is not translated -------


PAGES = {  # page -> its one paragraph's translation ("" = untranslated)
    "untranslated": "",
    "translated": "样本 $n$ 的损失是 $-\\log p$。",
    # full-width punctuation just inside ** keeps CommonMark from bolding
    "raw": "的**“样本”**损失是 $-\\log p$。",
}


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory) -> tuple[Path, str]:
    """A three-page Sphinx project built in Chinese with the book's
    extension, one page per case of ``PAGES``; its HTML folder and its
    warnings."""
    root = tmp_path_factory.mktemp("tiny-book")
    src = root / "src"
    messages = src / "locales" / "zh_CN" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    (src / "conf.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(ROOT / "_ext")!r})
            extensions = ["myst_nb", "book_i18n"]
            myst_enable_extensions = ["dollarmath"]
            language = "zh_CN"
            locale_dirs = ["locales"]
            gettext_compact = False
            """
        )
    )
    toctree = "\n".join(PAGES)
    (src / "index.md").write_text(
        f"# 目录\n\n```{{toctree}}\n{toctree}\n```\n"
    )
    for page, translation in PAGES.items():
        (src / f"{page}.md").write_text(
            f"# {page}\n\nThe loss of sample $n$ is $-\\log p$.\n"
        )
        catalogue = polib.POFile()
        catalogue.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
        catalogue.append(polib.POEntry(msgid=page, msgstr=page + " 页"))
        catalogue.append(
            polib.POEntry(
                msgid="The loss of sample $n$ is $-\\log p$.",
                msgstr=translation,
            )
        )
        catalogue.save(str(messages / f"{page}.po"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-q",
            "-b",
            "html",
            "--keep-going",
            "-W",
            str(src),
            str(root / "html"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode != 0  # two of the pages warn
    return root / "html", result.stderr


def _warnings_of(stderr: str, page: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"/{page}.md:" in line]


def test_an_untranslated_message_fails_the_chinese_build(tiny_book):
    warnings = _warnings_of(tiny_book[1], "untranslated")
    assert any("untranslated message" in w for w in warnings), tiny_book[1]


def test_a_translated_page_builds_with_a_link_to_english(tiny_book):
    html, stderr = tiny_book
    assert _warnings_of(stderr, "translated") == []
    page = (html / "translated.html").read_text()
    assert "样本" in page and 'lang="zh-CN"' in page
    assert 'class="language-switch-link" href="../translated.html"' in page


def test_markup_left_raw_fails_the_chinese_build(tiny_book):
    warnings = _warnings_of(tiny_book[1], "raw")
    assert any("markup left raw" in w for w in warnings), tiny_book[1]
