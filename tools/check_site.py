"""Open every page of the built book in headless Chromium: what a reader sees.

For every HTML page of the build (``--html``, default ``_build/html``):

* math: every Sphinx math element holds a MathJax ``<mjx-container>``, no
  MathJax error box, no raw ``$$`` outside code, no TeX in the text of a
  link (a reference to a heading with math), MathJax from the build;
* loading: every image loads, no JavaScript exception, and no stylesheet,
  script, font or image fails to load (Network.loadingFailed, HTTP >= 400);
* desktop layout (1280 px window, hidden cells and dropdowns opened): no code
  block, cell output, table or display equation scrolls sideways (its
  ``scrollWidth`` exceeds its ``clientWidth``) or reaches past the text
  column (``article.bd-article``);
* phone layout (390 px window): the page itself does not scroll sideways
  (``scrollWidth`` of the document); a block may scroll inside itself;
* figures (images in cell outputs): shown at the full width of their output
  box (the column, 672 CSS px at 1280), with >= 2 image pixels per CSS pixel
  (``naturalWidth / clientWidth``), and text >= 9 pt as shown. The font size
  is not read off the pixels: ``ce_lib.book`` records the smallest font size
  (pt) and the width (in) of each figure in a PNG text chunk, and the check
  scales it by the measured display width (shown pt = recorded pt x CSS px /
  (width in x 96)). A figure without that record fails;
* dark theme: no figure is a white block. On the full-page screenshot taken
  under ``data-theme="dark"`` it measures, inside each figure's box, the
  share of light, unsaturated pixels (luminance > 0.5, channel spread
  < 0.15: white or light grey) and fails above 0.2 (an opaque white figure
  scores about 0.85, a transparent one on the theme's grey backing about
  0.9, a ``ce_lib.book`` figure shown inverted under 0.05);
* every document in ``_toc.yml`` (read with PyYAML) was built and is linked
  from the front page's navigation;
* languages: every page of ``_toc.yml``, in either edition, links to the
  same page in the other edition (``.language-switch``; once every edition
  is built, each link must lead to a built page: ``--language-links``, on
  when every edition is checked), and where
  a paragraph holds Chinese characters, Chromium drew every one of them in
  a CJK font (``CSS.getPlatformFontsForNode``: no empty boxes, no fallback
  to a font without them).

The Chinese edition (``HTML/zh``, built by ``tools/build_book.py``) shares
its code, outputs and figures with the English pages, which are checked in
full; its pages are checked for what a translation changes: its formulas
(the same TeX as the English page's, every one, which the English check
renders; MathJax typesets only the first 12 on the Chinese page, to show it
works there), loads, the 1280 px layout, the CJK font and the language
link; with
``--translation-screenshots``, also one light screenshot each
(``zh-NAME.jpg``).

With ``--pdf FILE`` it also prints every page of the book as it checks it
and joins them into the PDF edition (see ``tools/make_pdf.py``), then
checks that PDF. It saves full-page screenshots of every page, light and dark
(``NAME.jpg``; ``NAME-dark.jpg`` at half size), and ``report.json`` with every
measurement, to ``--screenshots`` (default: ``screenshots/`` beside the
HTML folder, so ``_build/screenshots``). It drives Chromium over the
DevTools protocol on a pipe, with a deadline on every read: a browser that
stalls fails the check within ``--timeout`` seconds (default 60).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_PAGES = {"genindex.html", "search.html", "index.html"}  # index redirects
sys.path.insert(0, str(ROOT / "_ext"))
from book_i18n import EDITIONS  # noqa: E402

# the folders of the translated editions, inside the English HTML
TRANSLATIONS = tuple(folder for folder, _ in EDITIONS.values() if folder)
DESKTOP = {"width": 1280, "height": 1000, "mobile": False}
PHONE = {"width": 390, "height": 844, "mobile": True}
MIN_DENSITY = 2.0  # image pixels per CSS pixel
MIN_FONT_PT = 9.0
MAX_WHITE_SHARE = 0.2  # of a figure's box on the dark screenshot
DARK_SCALE = 0.5  # the dark screenshot, half size: for the figures' shade
RECORD_KEY = "ce-book"  # the PNG text chunk written by ce_lib.book

# Runs once the page has loaded: waits for MathJax, the images and the fonts.
INSPECT_PAGE = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  // on a translated page MathJax typesets only a sample (MATH_SAMPLE)
  const sample = window.__bookMathSample;
  const maths = [...document.querySelectorAll(".math")];
  const checked = sample ? maths.slice(0, sample) : maths;
  if (sample && checked.length) await MathJax.typesetPromise(checked);
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  await document.fonts.ready;
  const text = [...document.querySelectorAll("article, .bd-article")]
    .map(el => { const c = el.cloneNode(true);
                 c.querySelectorAll("pre, code, script, style")
                   .forEach(n => n.remove());
                 return c.textContent; }).join("\n");
  return {
    mathElements: maths.length,
    unrenderedMath: checked
      .filter(el => !el.querySelector("mjx-container"))
      .map(el => el.textContent.slice(0, 80)),
    mjxContainers: document.querySelectorAll("mjx-container").length,
    mathErrors: [...document.querySelectorAll("mjx-merror")]
      .map(el => el.textContent.slice(0, 80)),
    rawDollars: text.includes("$$"),
    images: images.length,
    brokenImages: images.filter(i => !i.complete || i.naturalWidth === 0)
      .map(img => img.getAttribute("src")),
    remoteMathJax: [...document.scripts].map(s => s.src)
      .filter(src => /mathjax/i.test(src) && !src.startsWith("file:")),
    navLinks: [...document.querySelectorAll(
        ".bd-sidebar-primary a.reference.internal")]
      .map(a => new URL(a.href, location.href).pathname),
    title: document.title,
    rawTexInLinks: [...document.querySelectorAll("a .std-ref, a .doc")]
      .map(el => el.textContent).filter(t => /\\[a-zA-Z]/.test(t))
      .slice(0, 3),
    lang: document.documentElement.lang,
    languageLinks: [...document.querySelectorAll(".language-switch a")]
      .map(a => a.href),
    cjkProbe: (() => {
      // the paragraph whose own text holds the most Han characters: its
      // fonts are read over the DevTools protocol (CSS domain)
      const han = /[\u3400-\u9fff]/g;
      let best = null, most = 0;
      for (const p of document.querySelectorAll("article p, article h1")) {
        const own = [...p.childNodes].filter(n => n.nodeType === 3)
          .map(n => n.textContent).join("");
        const count = (own.match(han) || []).length;
        if (count > most) { best = p; most = count; }
      }
      if (best) best.setAttribute("data-cjk-probe", "");
      return most;
    })(),
  };
})()
"""

# On a translated page: MathJax starts without typesetting the page, and
# INSPECT_PAGE typesets only its first MATH_SAMPLE formulas (the formulas
# are the English page's, checked by math_problems; the English check
# renders every one of them).
MATH_SAMPLE = 12
NO_TYPESET = r"""
(() => {
  window.__bookMathSample = MATH_SAMPLE;
  let value;
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get() { return value; },
    set(v) {
      if (value === undefined && v && !v.version) {  // the page's config
        v.startup = Object.assign({}, v.startup, {typeset: false});
      }
      value = v;
    },
  });
})();
""".replace("MATH_SAMPLE", str(MATH_SAMPLE))
MATH_SOURCE = re.compile(
    r'class="math notranslate nohighlight">(.*?)</(?:span|div)>', re.S
)


def math_problems(page: Path, english: Path) -> list[str]:
    """A translated page holds exactly its English page's formulas."""
    from collections import Counter

    def formulas(path: Path) -> Counter:  # TeX, whitespace normalised
        return Counter(
            " ".join(tex.split())
            for tex in MATH_SOURCE.findall(path.read_text())
        )

    ours, theirs = formulas(page), formulas(english)
    if ours == theirs:
        return []
    missing = list((theirs - ours).elements())[:3]
    extra = list((ours - theirs).elements())[:3]
    return [
        f"formulas differ from the English page: missing {missing}, "
        f"extra {extra}"
    ]


# The figures of the page: their boxes (page coordinates) and sizes.
FIGURES = r"""
(() => [...document.querySelectorAll("article div.cell_output img")]
  .filter(img => img.offsetParent !== null).map(img => {
    const r = img.getBoundingClientRect();
    const box = img.parentElement, cs = getComputedStyle(box);
    const inner = box.clientWidth - parseFloat(cs.paddingLeft)
                  - parseFloat(cs.paddingRight);
    return {src: img.src, shown: r.width, natural: img.naturalWidth,
            box: inner, x: r.left + scrollX, y: r.top + scrollY,
            w: r.width, h: r.height,
            caption: (img.closest("figure")?.querySelector("figcaption")
                      ?.textContent || "").trim().slice(0, 60)};
  }))()
"""

# Opens hidden cell inputs and dropdowns, then lists every block that
# scrolls sideways or reaches past the text column.
LAYOUT = r"""
(async () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  document.querySelectorAll(".toggle-hidden")
    .forEach(e => e.classList.remove("toggle-hidden"));
  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)));
  const col = document.querySelector("article.bd-article")
              || document.body;
  const cs = getComputedStyle(col), cr = col.getBoundingClientRect();
  const left = cr.left + parseFloat(cs.paddingLeft);
  const right = cr.right - parseFloat(cs.paddingRight);
  const blocks = new Set();
  const add = sel => document.querySelectorAll(sel)
    .forEach(el => blocks.add(el));
  add("article pre");
  add("article div.cell_output > div.output");
  add("article table");
  add("article div.math > mjx-container, article mjx-container[display]");
  const heading = el => {
    const sec = el.closest("section");
    const h = sec && sec.querySelector("h1, h2, h3, h4");
    return h ? h.textContent.replace(/[#¶]/g, "").trim().slice(0, 50) : "";
  };
  const found = [];
  for (const el of blocks) {
    if (!el.getClientRects().length) continue;
    const kind = el.matches("mjx-container") ? "equation"
      : el.closest(".cell_output") ? "output"
      : el.matches("table") ? "table" : "code";
    const r = el.getBoundingClientRect();
    const scrolls = el.scrollWidth > el.clientWidth + 1;
    const past = Math.max(r.right - right, left - r.left);
    if (!scrolls && past <= 1) continue;
    const lines = (el.innerText || "").split("\n");
    const longest = Math.max(...lines.map(l => l.length));
    const first = lines.find(l => l.trim()) || "";
    found.push({kind, section: heading(el),
                text: kind === "equation"
                  ? (el.closest("div.math")?.id || "") : first.slice(0, 60),
                scrollWidth: el.scrollWidth, clientWidth: el.clientWidth,
                past: Math.round(past), longest});
  }
  return {column: Math.round(right - left), blocks: found};
})()
"""

# At a phone's width: does the page itself scroll sideways, and what sticks
# out (outermost elements past the right edge not inside a scroller).
PHONE_WIDTH = r"""
(() => {
  const doc = document.documentElement, vw = doc.clientWidth;
  const out = [];
  if (doc.scrollWidth > vw + 1) {
    for (const el of document.querySelectorAll("body *")) {
      const r = el.getBoundingClientRect();
      if (r.right <= vw + 1 || !el.getClientRects().length) continue;
      if (["fixed", "sticky"].includes(getComputedStyle(el).position)) {
        continue;  // does not widen the page (the theme's skip link)
      }
      let p = el.parentElement, clipped = false, reported = false;
      while (p && p !== document.body) {
        const o = getComputedStyle(p).overflowX;
        if (o !== "visible") { clipped = true; break; }
        if (out.some(x => x.el === p)) { reported = true; break; }
        p = p.parentElement;
      }
      if (!clipped && !reported) out.push({el, right: Math.round(r.right)});
    }
  }
  return {scrollWidth: doc.scrollWidth, viewport: vw,
          culprits: out.slice(0, 5).map(x => ({
            tag: x.el.tagName.toLowerCase() + (x.el.className ?
                 "." + String(x.el.className).split(" ")[0] : ""),
            right: x.right,
            text: (x.el.innerText || "").trim().slice(0, 50)}))};
})()
"""

SET_DARK = (
    "document.documentElement.dataset.theme = 'dark';"
    "document.documentElement.dataset.mode = 'dark';"
    "new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))"
)
SET_LIGHT = SET_DARK.replace("'dark'", "'light'")


class Chromium:
    """Headless Chromium, driven over the DevTools protocol on fds 3 and 4.

    Every read waits with ``select`` until a deadline, so a browser that
    stops answering raises ``TimeoutError`` instead of hanging the check.
    """

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="check-site-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol uses fds 3, 4
            reader, writer = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(reader, 3)  # dup2 also clears close-on-exec
            os.dup2(writer, 4)
            os.closerange(5, 1 << 16)  # nothing else: not another browser's

        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            "about:blank",
        ]
        self._process = subprocess.Popen(
            [binary, *flags],
            preexec_fn=wire_pipes,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        os.set_blocking(self._from_browser, False)
        self._buffer = b""
        self.stalled = False
        self._next_id = 0
        self.events: list[dict] = []

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method}
        message["params"] = params or {}
        if session:
            message["sessionId"] = session
        deadline = time.monotonic() + (timeout or self.timeout)
        self._write(json.dumps(message).encode() + b"\0", deadline, method)
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, message in enumerate(self.events):
                if message.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._read(deadline, event))

    def _write(self, data: bytes, deadline: float, what: str) -> None:
        while data:
            left = deadline - time.monotonic()
            _, ready, _ = select.select(
                [], [self._to_browser], [], max(left, 0)
            )
            if not ready:
                self.stalled = True
                raise TimeoutError(f"Chromium did not take {what} in time")
            data = data[os.write(self._to_browser, data) :]

    def _read(self, deadline: float, what: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select(
                [self._from_browser], [], [], max(left, 0)
            )
            if not ready:
                self.stalled = True
                raise TimeoutError(
                    f"Chromium did not answer {what} within "
                    f"{self.timeout:.0f} s"
                )
            try:
                chunk = os.read(self._from_browser, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            if not self.stalled:
                self.send("Browser.close", timeout=5)
            self._process.wait(timeout=0.1 if self.stalled else 5)
        except Exception:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)


def toc_documents(toc_file: Path) -> list[str]:
    """The documents of a jb-book ``_toc.yml``, root first, no extensions."""
    import yaml

    docs: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    docs.append(node[key].removesuffix(".md"))
            for value in node.values():
                if isinstance(value, list | dict):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(toc_file.read_text()))
    return [d.removesuffix(".ipynb") for d in docs]


def figure_record(path: Path) -> dict | None:
    """The ``ce-book`` record (width_in, dpi, min_font_pt) of a PNG."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            raw = getattr(image, "text", {}).get(RECORD_KEY)
    except OSError:
        return None
    return json.loads(raw) if raw else None


def white_share(shot, box: dict) -> float:
    """Share of light, unsaturated pixels (white or grey) of ``box``."""
    import numpy as np

    x0, y0 = max(int(box["x"]) + 1, 0), max(int(box["y"]) + 1, 0)
    x1 = min(int(box["x"] + box["w"]) - 1, shot.shape[1])
    y1 = min(int(box["y"] + box["h"]) - 1, shot.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0.0
    part = shot[y0:y1, x0:x1, :3].astype(np.float32) / 255
    lum = part @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    spread = part.max(axis=2) - part.min(axis=2)
    return float(((lum > 0.5) & (spread < 0.15)).mean())


class Page:
    """One tab, reused for every page."""

    def __init__(self, browser: Chromium):
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})
        self.session = browser.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
        )["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
            },
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(
                details.get("exception", {}).get("description")
                or details.get("text")
            )
        return result["result"].get("value")

    def viewport(self, size: dict) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {**size, "deviceScaleFactor": 1},
        )

    def tall(self) -> None:
        """Make the window as tall as the page, so one capture shows it all
        (cheaper than captureBeyondViewport, which lays it out again)."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        self.viewport({**DESKTOP, "height": int(size["height"]) + 1})

    def screenshot(self, path: Path, scale: float = 1) -> bytes:
        """JPEG of the whole window (see :meth:`tall`)."""
        size = self.send("Page.getLayoutMetrics")["cssVisualViewport"]
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "jpeg",
                "quality": 85,
                "optimizeForSpeed": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["clientWidth"],
                    "height": size["clientHeight"],
                    "scale": scale,
                },
            },
        )
        data = base64.b64decode(shot["data"])
        path.write_bytes(data)
        return data


CJK_FONT = re.compile(
    r"CJK|Han Sans|Han Serif|PingFang|YaHei|Hei|Song|Ming|Kai|WenQuanYi",
    re.I,
)


def cjk_fonts(tab: Page) -> list[dict]:
    """The fonts Chromium drew the Han characters of the probe with."""
    tab.send("DOM.enable")
    tab.send("CSS.enable")
    root = tab.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    node = tab.send(
        "DOM.querySelector", {"nodeId": root, "selector": "[data-cjk-probe]"}
    )["nodeId"]
    fonts = tab.send("CSS.getPlatformFontsForNode", {"nodeId": node})
    tab.send("CSS.disable")
    tab.send("DOM.disable")
    return fonts["fonts"]


def language_link_problems(report: dict) -> list[str]:
    """Every page links to the same page in the other edition (whether
    the target was built is checked by :func:`unresolved_language_links`,
    once every edition is built)."""
    if not report["languageLinks"]:
        return ["no link to the other language (.language-switch)"]
    return []


LANGUAGE_LINK = re.compile(r'class="language-switch-link" href="([^"]+)"')


def unresolved_language_links(pages: list[Path], html: Path) -> list[str]:
    """The language links of ``pages`` (read from their HTML) that lead to
    no built page."""
    problems = []
    for page in pages:
        for href in LANGUAGE_LINK.findall(page.read_text()):
            target = (page.parent / href).resolve()
            if not target.exists():
                problems.append(
                    f"{page.relative_to(html).as_posix()}: language link to "
                    f"a missing page: {target.relative_to(html).as_posix()}"
                )
    return problems


def failed_loads(events: list[dict]) -> list[str]:
    """Stylesheets, scripts, fonts and images that failed to load."""
    requests, failed = {}, []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            if params.get("canceled"):
                continue
            url = requests.get(params["requestId"], "?")
            failed.append(
                f"{params.get('type', '?')} {short_url(url)}: "
                f"{params.get('errorText')}"
            )
        elif method == "Network.responseReceived":
            status = params["response"].get("status", 0)
            if status >= 400:
                url = params["response"]["url"]
                failed.append(
                    f"{params.get('type')} {short_url(url)}: {status}"
                )
    return failed


def short_url(url: str) -> str:
    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
        parts = Path(path).parts
        return "/".join(parts[-3:])
    return url[:100]


def check_page(
    tab: Page,
    page: Path,
    html: Path,
    shots: Path,
    pdf: list | None = None,
    translation: bool = False,
    book_page: bool = True,
    translation_shots: bool = False,
) -> tuple[dict, list[str]]:
    """Load ``page``, measure it, save its screenshots; the problems found.

    With a list as ``pdf``, also print the page and append the PDF to it.
    A page of a translation (``translation``) shares its code, outputs and
    figures with the English page, which is checked in full: it is checked
    for what translation changes (math, loads, the 1280 px layout, the
    Chinese font, the language link), and gets one light screenshot only
    with ``translation_shots`` (a screenshot costs more than the checks)."""
    import numpy as np
    from PIL import Image

    clock, timings = time.monotonic(), {}

    def lap(step: str) -> None:
        nonlocal clock
        timings[step] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    tab.browser.events.clear()
    tab.viewport(DESKTOP)
    script = None
    if translation and not translation_shots:
        script = tab.send(
            "Page.addScriptToEvaluateOnNewDocument", {"source": NO_TYPESET}
        )["identifier"]
    tab.send("Page.navigate", {"url": page.as_uri()})
    tab.browser.wait_for("Page.loadEventFired")
    if script is not None:
        tab.send(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script}
        )
    lap("load")
    report = tab.evaluate(INSPECT_PAGE)
    lap("inspect")
    events = tab.browser.events
    report["exceptions"] = [
        e["params"]["exceptionDetails"]
        .get("exception", {})
        .get("description", e["params"]["exceptionDetails"].get("text"))
        for e in events
        if e.get("method") == "Runtime.exceptionThrown"
    ]
    report["cjkFonts"] = cjk_fonts(tab) if report["cjkProbe"] else []
    report["isBookPage"] = book_page
    report["layout"] = tab.evaluate(LAYOUT)
    lap("layout")
    if pdf is not None:  # print it, as tools/make_pdf.py does
        import make_pdf

        pdf.append(make_pdf.print_page(tab))
        lap("print")
    # the screenshots last at 1280 px: the tall window lays the page out
    # again, and only the phone's width comes after it
    name = page.relative_to(html).with_suffix("").as_posix().replace("/", "-")
    if translation:  # its figures and phone layout are the English page's
        english = html / Path(*page.relative_to(html).parts[1:])
        report["mathAgainstEnglish"] = (
            math_problems(page, english) if english.exists() else []
        )
        if translation_shots:
            tab.evaluate(SET_LIGHT)
            tab.tall()
            tab.screenshot(shots / f"{name}.jpg")
            lap("light_shot")
        report["figures"] = []
        report["phone"] = None
        report["failedLoads"] = failed_loads(tab.browser.events)
        report["seconds"] = timings
        return report, problems_of(report)
    tab.evaluate(SET_LIGHT)
    tab.tall()
    tab.screenshot(shots / f"{name}.jpg")
    lap("light_shot")
    tab.evaluate(SET_DARK)
    figures = tab.evaluate(FIGURES)
    dark = tab.screenshot(shots / f"{name}-dark.jpg", DARK_SCALE)
    lap("dark_shot")
    if figures:
        shot = np.asarray(Image.open(io.BytesIO(dark)).convert("RGB"))
        for fig in figures:
            box = {k: fig[k] * DARK_SCALE for k in ("x", "y", "w", "h")}
            fig["dark_white_share"] = round(white_share(shot, box), 3)
    lap("dark_measure")
    tab.evaluate(SET_LIGHT)
    report["figures"] = figures
    tab.viewport(PHONE)
    report["phone"] = tab.evaluate(
        "new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))"
        ".then(() => " + PHONE_WIDTH.strip() + ")"
    )
    lap("phone")
    report["failedLoads"] = failed_loads(tab.browser.events)
    report["seconds"] = timings
    return report, problems_of(report)


def figure_problems(fig: dict) -> list[str]:
    label = fig["caption"] or short_url(fig["src"])
    problems = []
    if abs(fig["shown"] - fig["box"]) > 2:
        problems.append(
            f"shown {fig['shown']:.0f} px wide in a {fig['box']:.0f} px "
            "column (figures are the column's width: use_book_style())"
        )
    density = fig["natural"] / fig["shown"] if fig["shown"] else 0
    fig["density"] = round(density, 2)
    if density < MIN_DENSITY:
        problems.append(
            f"{density:.2f} image px per CSS px (needs {MIN_DENSITY})"
        )
    path = Path(urllib.parse.unquote(urllib.parse.urlparse(fig["src"]).path))
    record = figure_record(path)
    if record is None:
        problems.append(
            "no font record in the PNG: not drawn by ce_lib.book's "
            "use_book_style()"
        )
    elif record.get("min_font_pt") is not None:
        scale = fig["shown"] / (record["width_in"] * 96)
        shown_pt = record["min_font_pt"] * scale
        fig["min_font_pt_shown"] = round(shown_pt, 2)
        if shown_pt < MIN_FONT_PT - 0.05:
            problems.append(
                f"smallest text {shown_pt:.1f} pt as shown "
                f"({record['min_font_pt']} pt at {record['width_in']} in; "
                f"needs {MIN_FONT_PT} pt)"
            )
    if fig.get("dark_white_share", 0) > MAX_WHITE_SHARE:
        problems.append(
            f"a light block on the dark theme "
            f"({fig['dark_white_share']:.0%} light grey or white pixels)"
        )
    return [f"figure '{label}': {p}" for p in problems]


def problems_of(report: dict) -> list[str]:
    problems = []
    if report["unrenderedMath"]:
        problems.append(f"math not rendered: {report['unrenderedMath'][:3]}")
    if report["mathElements"] and report["mjxContainers"] == 0:
        problems.append("no rendered math (<mjx-container>) on the page")
    problems.extend(report.get("mathAgainstEnglish", []))
    if report["remoteMathJax"]:
        problems.append(f"MathJax from the network: {report['remoteMathJax']}")
    if report["mathErrors"]:
        problems.append(f"MathJax errors: {report['mathErrors'][:3]}")
    if report["rawTexInLinks"]:
        problems.append(
            f"TeX shown raw in a link's text (a reference to a heading "
            f"with math: give the link a text): {report['rawTexInLinks']}"
        )
    if report["rawDollars"]:
        problems.append("raw '$$' left in the text")
    if report["brokenImages"]:
        problems.append(f"images that did not load: {report['brokenImages']}")
    if report["exceptions"]:
        problems.append(f"JavaScript exceptions: {report['exceptions'][:3]}")
    for load in report["failedLoads"]:
        problems.append(f"failed to load: {load}")
    column = report["layout"]["column"]
    for block in report["layout"]["blocks"]:
        where = f"[{block['section']}] " if block["section"] else ""
        how = (
            f"scrolls sideways ({block['scrollWidth']} > "
            f"{block['clientWidth']} px"
            if block["scrollWidth"] > block["clientWidth"] + 1
            else f"reaches {block['past']} px past the column ({column} px"
        )
        chars = (
            f", longest line {block['longest']} chars"
            if block["kind"] in ("code", "output")
            else ""
        )
        problems.append(
            f"1280 px: {block['kind']} {where}{block['text']!r} {how}{chars})"
        )
    if report["isBookPage"]:
        problems.extend(language_link_problems(report))
    if report["cjkProbe"]:
        drawn = sum(
            f["glyphCount"]
            for f in report["cjkFonts"]
            if CJK_FONT.search(f["familyName"])
        )
        if drawn < report["cjkProbe"]:
            problems.append(
                f"Chinese text not drawn in a CJK font ({drawn} of "
                f"{report['cjkProbe']} characters): {report['cjkFonts']}"
            )
    phone = report["phone"]
    if phone and phone["scrollWidth"] > phone["viewport"] + 1:
        problems.append(
            f"390 px: the page scrolls sideways ({phone['scrollWidth']} px "
            f"wide): {phone['culprits']}"
        )
    for fig in report["figures"]:
        problems.extend(figure_problems(fig))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check every page of the built book in headless "
        "Chromium (math, loads, layout at 1280 and 390 px, figures, dark "
        "theme) and save light and dark full-page screenshots.",
        epilog="Check a private build: jupyter-book build . --path-output "
        "/tmp/NAME -W -n --keep-going, then python tools/check_site.py "
        "--html /tmp/NAME/_build/html (screenshots in "
        "/tmp/NAME/_build/screenshots). Full description: the module "
        "docstring.",
    )
    parser.add_argument(
        "--html",
        type=Path,
        default=ROOT / "_build" / "html",
        help="the built HTML (default: _build/html)",
    )
    parser.add_argument(
        "--screenshots",
        type=Path,
        help="where to save screenshots and report.json "
        "(default: screenshots/ beside the HTML folder)",
    )
    parser.add_argument(
        "--pages",
        nargs="*",
        default=[],
        metavar="TEXT",
        help="check only pages whose path contains one of these "
        "(e.g. 03-what); the toc and navigation checks still run",
    )
    parser.add_argument(
        "--pdf",
        type=Path,
        metavar="FILE",
        help="also print the book to this PDF, from the pages as loaded "
        "for the check (as tools/make_pdf.py does, without loading them "
        "again), and check it (make_pdf.py --check)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="browsers that check pages side by side (default: 2)",
    )
    parser.add_argument(
        "--translation-screenshots",
        action="store_true",
        help="also save a light screenshot of each translated page "
        "(zh-NAME.jpg); they share their figures and code with the "
        "English pages, whose screenshots are always saved",
    )
    parser.add_argument(
        "--editions",
        nargs="+",
        default=["en", *TRANSLATIONS],
        choices=["en", *TRANSLATIONS],
        help="the editions to check (default: all that were built)",
    )
    parser.add_argument(
        "--language-links",
        action="store_true",
        help="check that the language link of every page of every built "
        "edition leads to a built page (done anyway when every edition is "
        "checked; make test asks for it in the lane that runs after both "
        "builds)",
    )
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument(
        "--chromium",
        default=shutil.which("chromium") or "/usr/bin/chromium",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds the browser may take to answer one request; "
        "a stalled browser fails the check (default: 60)",
    )
    args = parser.parse_args(argv)

    html = args.html.resolve()
    shots = (args.screenshots or html.parent / "screenshots").resolve()
    # the English edition in HTML, each translation in HTML/<folder>
    editions = [
        html / folder
        for name, folder in [("en", ""), *((f, f) for f in TRANSLATIONS)]
        if name in args.editions and (html / folder).is_dir()
    ]
    pages = sorted(
        p
        for edition in editions
        for p in edition.rglob("*.html")
        if not {"_static", "_sources", "_images"}
        & set(p.relative_to(edition).parts)
        and p.relative_to(edition).as_posix() not in SKIP_PAGES
        and not (
            edition == html and p.relative_to(html).parts[0] in TRANSLATIONS
        )
    )
    toc = [html / f"{doc}.html" for doc in toc_documents(args.toc)]
    missing = [
        p.relative_to(html).as_posix()
        for edition in editions
        for p in (edition / t.relative_to(html) for t in toc)
        if not p.exists()
    ]
    if missing:
        print(f"FAIL: pages in _toc.yml were not built: {missing}")
        return 1
    # the pages of _toc.yml in every edition: each links to the other
    book_pages = {
        edition / t.relative_to(html) for edition in editions for t in toc
    }
    checked = [
        p
        for p in pages
        if not args.pages
        or any(t in p.relative_to(html).as_posix() for t in args.pages)
    ]
    if args.pdf and args.pages:
        parser.error("--pdf prints the whole book: leave out --pages")
    shots.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    jobs = max(1, min(args.jobs, len(checked)))
    shares: list[list[Path]] = [[] for _ in range(jobs)]
    for page in sorted(checked, key=lambda p: -p.stat().st_size):
        min(shares, key=lambda s: sum(p.stat().st_size for p in s)).append(
            page
        )
    results: dict[Path, tuple[dict | None, list[str]]] = {}
    pdfs: dict[Path, tuple[str, bytes]] = {}
    nav: set[str] = set()

    # started one after the other: Popen's preexec_fn is not thread-safe
    browsers = [Chromium(args.chromium, timeout=args.timeout) for _ in shares]

    def work(share: list[Path], browser: Chromium, first: bool) -> None:
        try:
            tab = Page(browser)
            if first and html in editions:  # the front page's navigation
                tab.viewport(DESKTOP)
                tab.send("Page.navigate", {"url": toc[0].as_uri()})
                browser.wait_for("Page.loadEventFired")
                nav.update(tab.evaluate(INSPECT_PAGE)["navLinks"])
            for page in share:
                printed: list | None = [] if args.pdf and page in toc else None
                translation = page.relative_to(html).parts[0] in TRANSLATIONS
                try:
                    results[page] = check_page(
                        tab,
                        page,
                        html,
                        shots,
                        printed,
                        translation,
                        book_page=page in book_pages,
                        translation_shots=args.translation_screenshots,
                    )
                    if printed:
                        pdfs[page] = printed[0]
                except (TimeoutError, RuntimeError) as error:
                    results[page] = (
                        None,
                        [f"{type(error).__name__}: {error}"],
                    )
                    if isinstance(error, TimeoutError):
                        break  # the browser is stuck: do not wait again
        except (TimeoutError, RuntimeError) as error:
            for page in share:
                results.setdefault(page, (None, [f"browser: {error}"]))
        finally:
            browser.close()

    with ThreadPoolExecutor(jobs) as pool:
        for future in [
            pool.submit(work, share, browser, i == 0)
            for i, (share, browser) in enumerate(
                zip(shares, browsers, strict=True)
            )
        ]:
            future.result()

    failures, reports = 0, {}
    for page in checked:
        rel = page.relative_to(html).as_posix()
        report, problems = results.get(page, (None, ["not checked"]))
        if report is None:
            print(f"FAIL {rel}")
        else:
            reports[rel] = report
            print(
                f"{'FAIL' if problems else 'ok  '} {rel:45s} math "
                f"{report['mjxContainers']:4d}  figures "
                f"{len(report['figures']):2d}  column "
                f"{report['layout']['column']} px"
            )
        for problem in problems:
            print(f"       - {problem}")
        failures += bool(problems)
    if not nav and html in editions:
        print("FAIL the front page's navigation could not be read")
        failures += 1
    unreachable = [
        p.relative_to(html).as_posix()
        for p in toc[1:]
        if nav and p.as_posix() not in nav
    ]
    if unreachable:
        print(f"FAIL not linked from the front page: {unreachable}")
        failures += 1
    if args.language_links or set(args.editions) == {"en", *TRANSLATIONS}:
        every_edition = [html] + [html / f for f in TRANSLATIONS]
        built = [
            edition / t.relative_to(html)
            for edition in every_edition
            for t in toc
            if (edition / t.relative_to(html)).exists()
        ]
        for problem in unresolved_language_links(built, html):
            print(f"FAIL {problem}")
            failures += 1
    if args.pdf:
        import make_pdf

        if all(p in pdfs for p in toc):
            out = args.pdf.resolve()
            make_pdf.write_pdf([(p, *pdfs[p]) for p in toc], html, out)
            failures += make_pdf.check(out, html, args.toc)
        else:
            print(f"FAIL {args.pdf}: not every page could be printed")
            failures += 1
    (shots / "report.json").write_text(json.dumps(reports, indent=1))
    print(
        f"{len(checked)} pages checked in {time.monotonic() - started:.0f} s, "
        f"{failures} with problems; screenshots and report.json in {shots}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
