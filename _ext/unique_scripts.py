"""Sphinx extension: emit each ``<script>`` of a page once.

With Sphinx 7.4, sphinx-thebe 0.3 (which Jupyter Book 1 always loads) registers its inline
configuration script twice, so every page declares ``const THEBE_JS_URL`` twice and the
browser throws a SyntaxError. This drops the repeated entries; ``tools/check_site.py``
fails on any JavaScript exception, so it would notice if the fix stopped working.
"""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        # the same inline script comes once with filename None and once with "": same key
        key = (getattr(script, "filename", script) or "", tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
