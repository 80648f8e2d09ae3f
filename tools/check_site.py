"""Open every page of the built book in headless Chromium and check what a reader sees.

For each HTML page of ``_build/html`` (run ``make book`` first) it checks that:

* the math is rendered: every Sphinx math element holds a MathJax ``<mjx-container>``, no
  MathJax error box (``<mjx-merror>``) is shown, and no raw ``$$`` is left in the text;
* every image on the page has loaded (``complete`` and a non-zero natural width);
* no JavaScript exception was thrown while the page loaded;
* every chapter listed in ``_toc.yml`` is reachable from the navigation of the front page.

It also saves a screenshot of every page (light theme, and the chapters in dark theme too)
to ``_build/screenshots/``, to be looked at before a page is called done.

It talks to Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``), so
it needs nothing beyond the standard library and Debian's ``chromium`` package.

Usage: ``python tools/check_site.py [--html _build/html] [--chromium /usr/bin/chromium]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_PAGES = {"genindex.html", "search.html", "index.html"}  # index.html only redirects

# Runs in the page once it has loaded: waits for MathJax and the images, then reports.
INSPECT_PAGE = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const textOutsideCode = [...document.querySelectorAll("article, .bd-article")]
    .map(el => { const c = el.cloneNode(true);
                 c.querySelectorAll("pre, code, script, style").forEach(n => n.remove());
                 return c.textContent; }).join("\n");
  return {
    mathElements: document.querySelectorAll(".math").length,
    unrenderedMath: [...document.querySelectorAll(".math")]
      .filter(el => !el.querySelector("mjx-container")).map(el => el.textContent.slice(0, 80)),
    mjxContainers: document.querySelectorAll("mjx-container").length,
    mathErrors: [...document.querySelectorAll("mjx-merror")].map(el => el.textContent.slice(0, 80)),
    rawDollars: textOutsideCode.includes("$$"),
    images: images.length,
    brokenImages: images.filter(img => !img.complete || img.naturalWidth === 0)
      .map(img => img.getAttribute("src")),
    remoteMathJax: [...document.scripts].map(s => s.src)
      .filter(src => /mathjax/i.test(src) && !src.startsWith("file:")),
    navLinks: [...document.querySelectorAll(".bd-sidebar-primary a.reference.internal")]
      .map(a => new URL(a.href, location.href).pathname),
    title: document.title,
  };
})()
"""


class Chromium:
    """A headless Chromium driven over the DevTools protocol on file descriptors 3 and 4."""

    def __init__(self, binary: str):
        self._profile = tempfile.mkdtemp(prefix="check-site-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol expects fds 3 and 4
            reader, writer = os.dup(to_browser_r), os.dup(from_browser_w)  # above 4
            os.dup2(reader, 3)  # dup2 onto another number also clears close-on-exec
            os.dup2(writer, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 "--allow-file-access-from-files", "--remote-debugging-pipe",
                 f"--user-data-dir={self._profile}", "about:blank"]
        self._process = subprocess.Popen([binary, *flags], preexec_fn=wire_pipes,
                                         close_fds=False, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.events):
                if message.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        shutil.rmtree(self._profile, ignore_errors=True)


def toc_documents(toc_file: Path) -> list[str]:
    """The documents listed in a jb-book ``_toc.yml`` (root first), without extensions."""
    docs = []
    for line in toc_file.read_text().splitlines():
        key, _, value = line.strip().lstrip("- ").partition(":")
        if key in {"root", "file"} and value.strip():
            docs.append(value.strip())
    return docs


def inspect(browser: Chromium, session: str, page: Path, shot_dir: Path, dark: bool) -> dict:
    browser.events.clear()
    browser.send("Page.navigate", {"url": page.as_uri()}, session)
    browser.wait_for("Page.loadEventFired")
    result = browser.send("Runtime.evaluate", {"expression": INSPECT_PAGE, "awaitPromise": True,
                                               "returnByValue": True}, session)
    report = result["result"]["value"]
    report["exceptions"] = [e["params"]["exceptionDetails"].get("exception", {})
                            .get("description", e["params"]["exceptionDetails"].get("text"))
                            for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
    def screenshot(name: str) -> None:
        png = browser.send("Page.captureScreenshot", {"format": "png"}, session)
        (shot_dir / f"{name}.png").write_bytes(base64.b64decode(png["data"]))

    screenshot(page.stem)
    if dark:
        browser.send("Runtime.evaluate", {"expression":
                     "document.documentElement.dataset.theme = 'dark'; "
                     "document.documentElement.dataset.mode = 'dark';"}, session)
        screenshot(f"{page.stem}-dark")
    return report


def problems_of(report: dict, needs_math: bool) -> list[str]:
    problems = []
    if report["unrenderedMath"]:
        problems.append(f"math not rendered: {report['unrenderedMath'][:3]}")
    if needs_math and report["mjxContainers"] == 0:
        problems.append("no rendered math (<mjx-container>) on a page that has math")
    if report["remoteMathJax"]:
        problems.append(f"MathJax loaded from the network, not the build: {report['remoteMathJax']}")
    if report["mathErrors"]:
        problems.append(f"MathJax errors: {report['mathErrors'][:3]}")
    if report["rawDollars"]:
        problems.append("raw '$$' left in the text")
    if report["brokenImages"]:
        problems.append(f"images that did not load: {report['brokenImages']}")
    if report["exceptions"]:
        problems.append(f"JavaScript exceptions: {report['exceptions'][:3]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    args = parser.parse_args()

    html = args.html.resolve()
    pages = sorted(p for p in html.rglob("*.html")
                   if not {"_static", "_sources", "_images"} & set(p.relative_to(html).parts)
                   and p.relative_to(html).as_posix() not in SKIP_PAGES)
    chapters = [html / f"{doc}.html" for doc in toc_documents(args.toc)]
    missing = [p.relative_to(html).as_posix() for p in chapters if not p.exists()]
    if missing:
        print(f"FAIL: pages in _toc.yml were not built: {missing}")
        return 1
    args.screenshots.mkdir(parents=True, exist_ok=True)

    browser = Chromium(args.chromium)
    failures = 0
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1000,
                     "deviceScaleFactor": 1, "mobile": False}, session)
        front_page_links: set[str] = set()
        for page in pages:
            is_chapter = page in chapters
            report = inspect(browser, session, page, args.screenshots,
                             dark=page.parent.name == "chapters")
            if page == chapters[0]:
                front_page_links = set(report["navLinks"])
            needs_math = is_chapter and report["mathElements"] > 0
            problems = problems_of(report, needs_math)
            status = "FAIL" if problems else "ok  "
            print(f"{status} {page.relative_to(html).as_posix():45s} "
                  f"math {report['mjxContainers']:4d}  images {report['images']:3d}")
            for problem in problems:
                print(f"       - {problem}")
            failures += bool(problems)
        unreachable = [p.relative_to(html).as_posix() for p in chapters[1:]
                       if p.as_posix() not in front_page_links]
        if unreachable:
            print(f"FAIL chapters not linked from the front page's navigation: {unreachable}")
            failures += 1
    finally:
        browser.close()
    print(f"{len(pages)} pages checked, {failures} with problems; "
          f"screenshots in {args.screenshots.relative_to(ROOT) if args.screenshots.is_relative_to(ROOT) else args.screenshots}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
