"""Unpickle each page's doctree once when resolving ``{numref}``, not once per
reference.

Sphinx 7.4's ``StandardDomain._resolve_numref_xref`` calls
``env.get_doctree(docname)`` for every numbered reference, only to look up
the target node, and ``get_doctree`` unpickles the whole page each time (it
returns a fresh copy on purpose: the writer changes the tree it gets). This
book has about 75 such references to pages whose doctrees are 0.3-0.5 MB, so
the fresh build spent about 5 of its 20 CPU seconds unpickling. This shim
gives ``_resolve_numref_xref`` alone a read-only doctree cached per build;
every other caller still gets a fresh copy, so the HTML is byte-identical.

When to remove it: when Sphinx resolves numrefs without unpickling the
target's doctree (check ``sphinx/domains/std`` after an upgrade; the shim
does nothing harmful if the method is renamed, it just stops helping).
"""

from __future__ import annotations

from sphinx.domains.std import StandardDomain

_cache: dict[str, object] = {}


def _clear(*_args) -> None:
    _cache.clear()


def setup(app):
    original = getattr(StandardDomain, "_resolve_numref_xref", None)
    if original is not None and not getattr(original, "_cached", False):

        def resolve(self, env, *args, **kwargs):
            fresh = env.get_doctree

            def cached(docname: str):
                if docname not in _cache:
                    _cache[docname] = fresh(docname)
                return _cache[docname]

            env.get_doctree = cached  # shadows the method on this call only
            try:
                return original(self, env, *args, **kwargs)
            finally:
                del env.get_doctree

        resolve._cached = True
        StandardDomain._resolve_numref_xref = resolve
    app.connect("env-updated", _clear)  # doctrees read again: new pages
    app.connect("build-finished", _clear)
    return {"parallel_read_safe": True, "parallel_write_safe": False}
