"""Sphinx extension: emit each ``<script>`` of a page once.

The cause, in Sphinx 7.4 (``sphinx/application.py``,
``sphinx/builders/html/__init__.py``): ``Sphinx.add_js_file(None,
body=...)`` registers an inline script twice over. It appends it to the
registry and, when a builder exists, also calls the HTML builder's
``add_js_file`` with ``filename=None``. When the builder prepares writing,
it re-adds every registry entry as ``add_js_file(filename or '', ...)``,
and its de-duplication (``_JavaScript.__eq__`` compares filenames) takes
``None`` and ``''`` for different files. sphinx-thebe 0.3, which Jupyter
Book 1 always loads, adds its configuration script that way after the
builder exists, so every page declared ``const THEBE_JS_URL`` twice and the
browser threw a SyntaxError on every page.

Fixed upstream by sphinx-doc/sphinx pull request #13402 (merged March
2025, in Sphinx 8), which passes ``''`` to the builder both times. Jupyter
Book 1 requires ``sphinx~=7.0``, so the shim stays while the book is on
Jupyter Book 1; remove it (and its line in ``_config.yml``) once the book
runs on a Sphinx that has the fix, or once sphinx-thebe stops adding an
inline script. ``tools/check_site.py`` fails on any JavaScript exception,
so a page that declares the script twice again fails ``make test``.
"""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        # the same inline script comes with filename None and with "": one key
        name = getattr(script, "filename", script) or ""
        key = (name, tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
