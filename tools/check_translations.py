"""Check the Chinese edition's catalogues (locales/zh_CN/LC_MESSAGES/*.po).

    python tools/check_translations.py [PO ...]   # default: every catalogue

For every catalogue it checks that the catalogue is complete and clean, and
that every translation keeps its message's markup:

* complete: every message has a translation, none is fuzzy (a message
  whose English changed since it was translated), and none is obsolete
  (``#~``, a message no longer in the book); ``make translations`` marks
  both after an English edit, and this check fails until they are done;
* Chinese: a translation of a message with words holds Chinese characters;
  a message may be kept as it is only when it is a name (at most three
  words, such as "PyTorch" or "Colab");
* markup kept: the translation has the same inline math (``$...$``, every
  character), the same roles with the same targets (``{eq}`eq-bin-ce```,
  ``{glue:text}`key```; the text of ``{ref}`text <target>``` may change),
  the same inline code and link addresses, and it parses to as many bold,
  italic, math and role spans as the message, with MyST's own Markdown
  parser: a ``**`` that CommonMark does not take for bold next to Chinese
  punctuation (``**“交叉熵”**的``) is caught here, before the build;
* one paragraph: Sphinx uses a translation only if it parses as one
  paragraph, so a heading "1. What $p$ is" is translated "1\\. ...", not
  as a list.

The build (``_ext/book_i18n.py``) checks the other direction: every message
of the book's sources has a translation. It prints one line per problem
and exits with 1 if there is any.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import polib

ROOT = Path(__file__).resolve().parents[1]
CATALOGUES = ROOT / "locales" / "zh_CN" / "LC_MESSAGES"
sys.path.insert(0, str(ROOT / "_ext"))
from book_i18n import MARKUP, needs_translation  # noqa: E402

ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
CJK = re.compile(r"[\u3400-\u9fff]")
# roles whose shown text is prose: only the target in <...> must be kept
TEXT_ROLES = {"ref", "numref", "doc", "term", "download", "prf:ref"}
MAX_NAME_WORDS = 3


def _markup(text: str) -> dict[str, Counter]:
    """The math, roles (with their targets), inline code and link
    addresses of a message."""
    found = {
        "math": Counter(),
        "roles": Counter(),
        "inline code": Counter(),
        "links": Counter(),
    }
    for match in MARKUP.finditer(text):
        kind, value = match.lastgroup, match.group()
        if kind == "role":
            role, content = ROLE.fullmatch(value).groups()
            if role in TEXT_ROLES:
                target = re.search(r"<([^<>]+)>\s*$", content)
                content = target.group(1) if target else content
            found["roles"][(role, content.strip())] += 1
        elif kind == "code":
            found["inline code"][value.strip("`")] += 1
        elif kind == "math":
            found["math"][value] += 1
        elif kind == "link":
            found["links"][value[2:-1]] += 1
        else:  # a bare address
            found["links"][value] += 1
    return found


def _spans(text: str) -> Counter:
    """How many bold, italic, math and role spans MyST parses."""
    tokens = _parser().parse(text)
    spans = Counter()
    for token in tokens:
        for child in token.children or ():
            if child.type in (
                "strong_open",
                "em_open",
                "math_inline",
                "myst_role",
                "link_open",
            ):
                spans[child.type] += 1
    return spans


_PARSER = None


def _parser():
    global _PARSER
    if _PARSER is None:
        from markdown_it.renderer import RendererHTML
        from myst_parser.config.main import MdParserConfig
        from myst_parser.parsers.mdit import create_md_parser

        _PARSER = create_md_parser(
            MdParserConfig(
                enable_extensions={
                    "amsmath",
                    "colon_fence",
                    "dollarmath",
                    "deflist",
                    "substitution",
                }
            ),
            RendererHTML,
        )
    return _PARSER


def _diff(what: str, source: Counter, translation: Counter) -> list[str]:
    if source == translation:
        return []
    missing = list((source - translation).elements())
    extra = list((translation - source).elements())
    return [f"{what}: missing {missing}, extra {extra}"]


def check_entry(msgid: str, msgstr: str) -> list[str]:
    """The problems of one translation (an empty list if there are none)."""
    if not msgstr.strip():
        return ["not translated"]
    problems = []
    if needs_translation(msgid) and not CJK.search(msgstr):
        if msgstr != msgid or len(msgid.split()) > MAX_NAME_WORDS:
            problems.append("no Chinese in the translation")
    source, translation = _markup(msgid), _markup(msgstr)
    for what in source:
        problems += _diff(what, source[what], translation[what])
    problems += _diff("parsed spans", _spans(msgid), _spans(msgstr))
    blocks = [t.type for t in _parser().parse(msgstr) if t.level <= 1]
    if blocks != ["paragraph_open", "inline", "paragraph_close"]:
        problems.append(
            "not one paragraph: Sphinx keeps the English (a line that "
            "starts with '1.' or '-' is a list: write '1\\.')"
        )
    return problems


def check_catalogue(path: Path) -> list[str]:
    """Every problem of one catalogue, one line each."""
    catalogue = polib.pofile(str(path))
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    problems = []
    for entry in catalogue:
        where = f"{name}:{entry.linenum}"
        if entry.obsolete:
            problems.append(
                f"{where}: obsolete (no longer in the book): "
                f"{entry.msgid[:60]!r}"
            )
            continue
        if entry.fuzzy:
            problems.append(
                f"{where}: fuzzy (the English changed): {entry.msgid[:60]!r}"
            )
        for problem in check_entry(entry.msgid, entry.msgstr):
            problems.append(f"{where}: {problem}: {entry.msgid[:60]!r}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("catalogues", nargs="*", type=Path)
    args = parser.parse_args()
    paths = args.catalogues or sorted(CATALOGUES.rglob("*.po"))
    if not paths:
        print(f"no catalogue under {CATALOGUES}")
        return 1
    problems = [p for path in paths for p in check_catalogue(path.resolve())]
    for problem in problems:
        print(problem)
    done = sum(
        1
        for path in paths
        for e in polib.pofile(str(path))
        if e.msgstr.strip() and not e.fuzzy and not e.obsolete
    )
    total = sum(
        1 for path in paths for e in polib.pofile(str(path)) if not e.obsolete
    )
    print(
        f"{len(paths)} catalogues, {done} of {total} messages translated, "
        f"{len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
