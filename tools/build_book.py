"""Build both editions of the book: English and Chinese (中文版).

    python tools/build_book.py            # _build/html and _build/html/zh
    python tools/build_book.py --all      # every page afresh (make test)
    python tools/build_book.py --gettext  # the messages, _build/gettext

One source, two editions: the Chinese edition is the same Sphinx project
built with ``language = "zh_CN"``, which takes each page's prose from
``locales/zh_CN/LC_MESSAGES/<page>.po`` (``_ext/book_i18n.py``). The two
builds run side by side in two processes, each with its own doctree
cache, so an unchanged book rebuilds in seconds. The configuration is
Jupyter Book's (``_config.yml``, ``_toc.yml``, read by its
``build_sphinx``, as ``jupyter-book build`` does); the build is strict:
warnings are errors (``-W --keep-going``) and nitpicky. ``--gettext``
extracts every message into ``_build/gettext/<page>.pot``, which
``make translations`` merges into the catalogues with sphinx-intl.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
sys.path.insert(0, str(ROOT / "_ext"))
from book_i18n import EDITIONS as LANGUAGES  # noqa: E402

# name -> (language, builder, output folder, doctree folder); a translation
# is built into its folder inside the English HTML (_build/html/zh)
EDITIONS = {
    (folder or "en"): (
        language,
        "html",
        BUILD / "html" / folder,
        BUILD / (".doctrees-" + folder if folder else ".doctrees"),
    )
    for language, (folder, _) in LANGUAGES.items()
}
EDITIONS |= {
    "gettext": (
        "en",
        "gettext",
        BUILD / "gettext",
        BUILD / ".doctrees-gettext",
    ),
}


def build(name: str, fresh: bool) -> int:
    """Build one edition; return Sphinx's exit status."""
    os.chdir(ROOT)
    from jupyter_book.sphinx import build_sphinx

    language, builder, out, doctrees = EDITIONS[name]
    start = time.monotonic()
    status = build_sphinx(
        str(ROOT),
        str(out),
        noconfig=True,
        path_config=str(ROOT / "_config.yml"),
        confoverrides={
            "external_toc_path": "_toc.yml",
            "latex_individualpages": False,
            "nitpicky": True,
            "language": language,
        },
        doctreedir=str(doctrees),
        builder=builder,
        freshenv=fresh,
        warningiserror=True,
        keep_going=True,
        quiet=True,
    )
    status = status if isinstance(status, int) else 1
    print(
        f"{name:8s} {time.monotonic() - start:5.1f} s  "
        f"{'ok' if status == 0 else 'FAILED'}  {out.relative_to(ROOT)}",
        flush=True,
    )
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--all",
        action="store_true",
        help="read every page afresh (no doctree cache)",
    )
    parser.add_argument(
        "--gettext",
        action="store_true",
        help="extract the messages instead of building",
    )
    parser.add_argument(
        "--edition",
        choices=[name for name in EDITIONS if name != "gettext"],
        action="append",
        help="build only this edition (default: both)",
    )
    args = parser.parse_args()
    books = [name for name in EDITIONS if name != "gettext"]
    names = ["gettext"] if args.gettext else (args.edition or books)
    if args.all:
        for name in names:
            # Sphinx keeps the output of pages it does not rewrite; a fresh
            # build starts from an empty doctree cache.
            doctrees = EDITIONS[name][3]
            if doctrees.exists():
                import shutil

                shutil.rmtree(doctrees)
    if len(names) == 1:
        return build(names[0], args.all)
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(names)) as pool:
        statuses = pool.starmap(build, [(name, args.all) for name in names])
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main())
