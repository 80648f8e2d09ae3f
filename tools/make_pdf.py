"""Print the built book to one PDF: _build/pdf/cross-entropy-executable.pdf.

The PDF edition is the HTML edition printed. Headless Chromium (the one the
browser check drives) opens every page of ``_toc.yml`` in the built site,
waits for MathJax, the fonts and the images, and prints it (A4) with the
book's print stylesheet (``_static/print.css``: no sidebars or buttons,
figures and equations kept whole, code that wraps, solutions opened). pypdf
joins the pages into one file with a bookmark per page of the book,
continuous page numbers, and links between pages turned into jumps inside
the PDF. So the PDF has what the site has: the same numbered equations and
figures (Sphinx numbers them once, for both), MathJax's rendered math, the
Chinese terms in Noto Sans CJK SC (Debian's fonts-noto-cjk, installed by
``tools/install_browser.sh``) and the bibliography.

``make pdf`` runs this on ``_build/html``. ``make test`` prints the same
PDF during the browser check (``check_site.py --pdf``), from the pages it
has loaded anyway, and then checks it with ``--check``: the file exists,
every chapter's title is in its text, no raw ``$$`` is left, and every page
with Chinese text uses a CJK font (no empty boxes).

Usage: ``python tools/make_pdf.py [--html DIR] [--out FILE]`` or
``python tools/make_pdf.py --check FILE [--html DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_site import INSPECT_PAGE, Chromium, Page, toc_documents  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "pdf" / "cross-entropy-executable.pdf"
TITLE = "Cross-Entropy, Executable"

# A4 with 12 mm margins. At scale 0.86 the printed page lays out 820 CSS px
# wide, so the text column is as wide as on screen (equations and figures
# that fit there fit here) and body text prints at about 10.3 pt.
PAPER = {
    "paperWidth": 8.27,
    "paperHeight": 11.69,
    "marginTop": 0.55,
    "marginBottom": 0.6,
    "marginLeft": 0.47,
    "marginRight": 0.47,
    "scale": 0.86,
    "printBackground": True,
    "preferCSSPageSize": False,
    "generateTaggedPDF": False,  # a third smaller and faster; the HTML
    # edition is the accessible one
}

# Opens the solutions (the PDF cannot toggle them); hidden cell inputs stay
# hidden, as on the page.
PREPARE = r"""
(async () => {
  document.querySelectorAll(".toggle-hidden")
    .forEach(e => e.classList.remove("toggle-hidden"));
  document.documentElement.dataset.theme = "light";
  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)));
  return document.querySelector("article h1")?.textContent
    .replace(/[#¶]/g, "").trim();
})()
"""


def print_page(tab: Page) -> tuple[str, bytes]:
    """Print the page loaded in ``tab``: its title and its PDF."""
    title = tab.evaluate(PREPARE)
    data = tab.send("Page.printToPDF", PAPER)["data"]
    return title, base64.b64decode(data)


def print_pages(
    html: Path, docs: list[str], chromium: str, jobs: int = 2
) -> list[tuple]:
    """(document, title, PDF) for each document, in order, printed by
    ``jobs`` browsers side by side."""
    shares = [docs[i::jobs] for i in range(jobs)]
    printed: dict[str, tuple] = {}
    browsers = [Chromium(chromium, timeout=60) for _ in shares]  # serially

    def work(share: list[str], browser: Chromium) -> None:
        try:
            tab = Page(browser)
            tab.viewport({"width": 1280, "height": 1000, "mobile": False})
            for doc in share:
                browser.events.clear()
                url = (html / f"{doc}.html").as_uri()
                tab.send("Page.navigate", {"url": url})
                browser.wait_for("Page.loadEventFired")
                tab.evaluate(INSPECT_PAGE)  # MathJax, images and fonts ready
                title, data = print_page(tab)
                printed[doc] = (doc, title or doc, data)
        finally:
            browser.close()

    with ThreadPoolExecutor(jobs) as pool:
        for future in [
            pool.submit(work, share, browser)
            for share, browser in zip(shares, browsers, strict=True)
        ]:
            future.result()
    return [printed[doc] for doc in docs]


def number_pages(writer) -> None:
    """Stamp each page's number at its foot (Helvetica, not embedded)."""
    from pypdf import PageObject
    from pypdf.generic import (
        DecodedStreamObject,
        DictionaryObject,
        NameObject,
    )

    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    resources = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
    )
    for n, page in enumerate(writer.pages, 1):
        width = float(page.mediabox.width)
        text = str(n)
        x = (width - len(text) * 0.556 * 9) / 2  # Helvetica digits: 0.556 em
        stream = DecodedStreamObject()
        stream.set_data(
            f"BT /F1 9 Tf 0.33 g {x:.2f} 20 Td ({text}) Tj ET".encode()
        )
        stamp = PageObject.create_blank_page(
            width=width, height=float(page.mediabox.height)
        )
        stamp[NameObject("/Resources")] = resources
        stamp[NameObject("/Contents")] = stream
        page.merge_page(stamp)


def join(printed: list[tuple], html: Path):
    """One PdfWriter: every page, bookmarks, page numbers, inner links."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import (
        ArrayObject,
        DictionaryObject,
        NameObject,
    )

    writer = PdfWriter()
    first_page: dict[str, int] = {}
    for doc, title, data in printed:
        first_page[doc] = len(writer.pages)
        writer.append(PdfReader(io.BytesIO(data)), outline_item=title)
    number_pages(writer)
    # links to other pages of the book: jump to that page's start in the PDF
    root = html.resolve().as_posix()
    for page in writer.pages:
        for ref in page.get("/Annots") or []:
            annot = ref.get_object()
            action = annot.get("/A")
            uri = action.get_object().get("/URI") if action else None
            if not uri or not str(uri).startswith("file://"):
                continue
            path = urllib.parse.unquote(urllib.parse.urlparse(str(uri)).path)
            if not path.startswith(root):
                continue
            doc = path[len(root) + 1 :].removesuffix(".html")
            if doc not in first_page:
                continue
            target = writer.pages[first_page[doc]].indirect_reference
            annot[NameObject("/A")] = DictionaryObject(
                {
                    NameObject("/S"): NameObject("/GoTo"),
                    NameObject("/D"): ArrayObject(
                        [target, NameObject("/Fit")]
                    ),
                }
            )
    writer.add_metadata({"/Title": TITLE, "/Producer": "tools/make_pdf.py"})
    writer.page_mode = "/UseOutlines"
    return writer


def write_pdf(printed: list[tuple], html: Path, out: Path) -> None:
    """Join printed pages (document, title, PDF) into the book's PDF."""
    writer = join([(_doc(p, html), t, d) for p, t, d in printed], html)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        writer.write(f)
    print(
        f"wrote {out} ({len(writer.pages)} pages, "
        f"{out.stat().st_size / 1e6:.1f} MB)"
    )


def _doc(page, html: Path) -> str:
    """A document name ('chapters/01-...') from a name or an HTML path."""
    if isinstance(page, Path):
        return page.relative_to(html).with_suffix("").as_posix()
    return page


def build(html: Path, out: Path, toc: Path, chromium: str) -> int:
    started = time.monotonic()
    docs = toc_documents(toc)
    missing = [d for d in docs if not (html / f"{d}.html").exists()]
    if missing:
        print(f"FAIL: not built (run make book first): {missing}")
        return 1
    write_pdf(print_pages(html, docs, chromium), html, out)
    print(f"printed in {time.monotonic() - started:.0f} s")
    return 0


def check(pdf: Path, html: Path, toc: Path) -> int:
    """Check a printed PDF: chapters, math, CJK font. 0 when it passes."""
    from pypdf import PdfReader

    if not pdf.exists():
        print(f"FAIL: {pdf} does not exist (make pdf)")
        return 1
    reader = PdfReader(pdf)
    pages = page_texts(pdf, reader)
    flat = re.sub(r"\s+", " ", " ".join(pages))
    problems = []
    for doc in toc_documents(toc):
        title = _title(html / f"{doc}.html")
        if title and re.sub(r"\s+", " ", title) not in flat:
            problems.append(f"chapter title missing: {title!r}")
    raw = [n for n, text in enumerate(pages, 1) if "$$" in text]
    if raw:
        problems.append(f"raw '$$' (math not rendered) on pages {raw[:10]}")
    cjk_pages = [
        n
        for n, text in enumerate(pages)
        if re.search(r"[\u4e00-\u9fff]", text)
    ]
    if not cjk_pages:
        problems.append("no Chinese text found (交叉熵 at first use)")
    cjk_fonts = set()
    for n in cjk_pages:
        fonts = _fonts(reader.pages[n])
        found = {f for f in fonts if "CJK" in f or "Han Sans" in f}
        if not found:
            problems.append(
                f"page {n + 1}: Chinese text but no CJK font "
                f"(empty boxes?); fonts {sorted(fonts)}"
            )
        cjk_fonts |= found
    for problem in problems:
        print(f"FAIL {pdf.name}: {problem}")
    if not problems:
        print(
            f"ok   {pdf.name}: {len(reader.pages)} pages, every chapter "
            f"title, no raw $$, Chinese on {len(cjk_pages)} pages in "
            f"{', '.join(sorted(cjk_fonts))}"
        )
    return 1 if problems else 0


def page_texts(pdf: Path, reader) -> list[str]:
    """The text of each page: poppler's pdftotext when installed (0.3 s),
    else pypdf (about 10 s for the book)."""
    if shutil.which("pdftotext"):
        result = subprocess.run(
            ["pdftotext", "-enc", "UTF-8", str(pdf), "-"],
            capture_output=True,
            check=True,
        )
        return result.stdout.decode().split("\f")[: len(reader.pages)]
    return [page.extract_text() or "" for page in reader.pages]


def _title(page: Path) -> str | None:
    """The page's first heading, as the HTML has it (markup dropped)."""
    import html as html_lib

    match = re.search(r"<h1[^>]*>(.*?)</h1>", page.read_text(), re.S)
    if not match:
        return None
    text = re.sub(r"<[^>]+>", "", match.group(1))
    text = html_lib.unescape(text).replace("#", "").replace("¶", "")
    return text.strip()


def _fonts(page) -> set[str]:
    """Names of the fonts a page uses (Type 3 ones by their descriptor)."""
    names = set()
    resources = page.get("/Resources")
    fonts = resources.get_object().get("/Font") if resources else None
    for font in (fonts or {}).values():
        font = font.get_object()
        name = font.get("/BaseFont")
        if name is None and font.get("/FontDescriptor") is not None:
            name = font["/FontDescriptor"].get_object().get("/FontName")
        names.add(str(name).split("+")[-1])
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the built book to one PDF (or check a PDF)."
    )
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="PDF",
        help="check this PDF instead of printing one",
    )
    parser.add_argument(
        "--chromium",
        default=shutil.which("chromium") or "/usr/bin/chromium",
    )
    args = parser.parse_args(argv)
    html = args.html.resolve()
    if args.check:
        return check(args.check, html, args.toc)
    return build(html, args.out, args.toc, args.chromium)


if __name__ == "__main__":
    sys.exit(main())
