"""Sphinx extension: the Chinese edition (中文版) from the same sources.

The book has one source and two editions. ``tools/build_book.py`` builds
the English edition into ``_build/html`` and, with ``language = "zh_CN"``,
the Chinese one into ``_build/html/zh``; Sphinx's own internationalisation
replaces every prose message with its translation from
``locales/zh_CN/LC_MESSAGES/<page>.po``. Code, stored outputs, figures and
equations are the notebooks' own, shared by both editions. This extension
adds what Sphinx leaves out:

* **What is not a message.** Before Sphinx's ``Locale`` transform, it marks
  as untranslatable (``node["translatable"] = False``, so that the message
  is neither extracted into the catalogues nor looked up):

  - display equations (a ``math_block`` is the same in both languages);
  - the API reference's docstrings (autodoc's output: an object's ``desc``
    and a module's docstring): they are the library's documentation, in
    English in its source and in ``help()``; the API page's own prose is
    translated;
  - anything inside a block with the class ``original-text`` (the note's
    original text and its English translation in the appendix, the
    glossary's table; not ``untranslated``, which Sphinx's own stylesheet
    shades pink, for its translation-progress classes);
  - a message with no word to translate: only math, code, roles and
    punctuation, for example a table cell ``{func}`cross_entropy```.

* **Exercise titles and toctree captions.** sphinx-exercise gives an
  exercise's title no source, so Sphinx would neither extract nor translate
  it; its text becomes a message of its own. sphinx-external-toc inserts the
  toctrees after Sphinx has translated the page; their captions ("Chapters")
  are translated from the catalogue then.

* **Glued numbers in translated text.** MyST-NB's ``{glue:text}`` role looks
  its value up in the document being parsed; Sphinx parses a translation as
  a separate small document, where the lookup fails. The role falls back to
  the notebook being translated (``_retrieve_glue_data``).

* **Nothing left untranslated, nothing left raw.** After ``Locale``, in the
  Chinese build, every message that still has no translation is a warning
  (``book-i18n.untranslated``), and so is a translation whose MyST markup
  did not parse (a literal ``**``, ``{eq}`` or ``$`` left in the text).
  The test builds with warnings as errors, so an English edit whose
  catalogue entry was not updated and translated fails ``make test``
  (README, "The Chinese edition").

* **A link to the other language** at the top of every page
  (``.language-switch``), to the same page in the other edition, and
  ``<link rel="alternate" hreflang>`` for search engines. The Chinese
  edition also gets its title, search text and folding hints in Chinese.

* **A Chinese build as fast as the English one, nearly** (20 CPU-seconds
  against 16, from 43): the nodes of a translation are adopted by the page
  (``AdoptTranslatedNodes``: they kept the small documents they were parsed
  in, which made the doctrees nine times larger), and two shims, each
  explained where it is defined, remove costs of Sphinx 7.4's Chinese
  search indexer and of MyST-Parser 3.0 that only a translation multiplies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform
from sphinx.util import logging
from sphinx.util.nodes import extract_messages

logger = logging.getLogger(__name__)

EDITIONS = {  # language code -> (folder below the English root, link text)
    "en": ("", "English"),
    "zh_CN": ("zh", "中文"),
}
HTML_LANG = {"en": "en", "zh_CN": "zh-CN"}
ZH_TITLE = "可执行的交叉熵"
ZH_SEARCH = "在本书中搜索……"

# The markup of a message, read left to right (so that a role or math inside
# inline code, `\ref{eq1}`, is code): it carries no words to translate, and
# a translation keeps it (tools/check_translations.py).
MARKUP = re.compile(
    r"(?P<role>\{[\w:-]+\}`[^`]*`)|(?P<code>``.+?``|`[^`]+`)"
    r"|(?P<math>\$\$.+?\$\$|\$[^$\n]+\$)|(?P<link>\]\([^)\s]+\))"
    r"|(?P<url>https?://\S+)",
    re.S,
)
_WORD = re.compile(r"[A-Za-z]{2,}|[\u4e00-\u9fff]")
# What a translation whose markup did not parse leaves in the text.
_RAW_MARKUP = re.compile(r"\*\*|\{[a-z:-]+\}`|(?<!\\)\$|\]\(")


def needs_translation(message: str) -> bool:
    """Whether ``message`` holds a word once its markup is taken out."""
    return bool(_WORD.search(MARKUP.sub(" ", message)))


def _is_chinese(config) -> bool:
    return (config.language or "en").startswith("zh")


def _is_a_translation(document) -> bool:
    """Whether ``document`` is one message's translation being parsed (the
    transforms run on those too), not a page."""
    return document.get("source", "").endswith("<translated>")


class MarkUntranslated(SphinxTransform):
    """Mark what is not translated (see the module's docstring)."""

    default_priority = 15  # before sphinx.transforms.i18n.Locale (20)

    def apply(self, **kwargs) -> None:
        if _is_a_translation(self.document):
            return
        for node in self.document.findall(nodes.Element):
            if (
                isinstance(node, nodes.math_block)
                or isinstance(node, addnodes.desc)
                or ":docstring of " in (node.source or "")
                or "original-text" in node.get("classes", ())
            ):
                for inner in node.findall(nodes.Element):
                    inner["translatable"] = False
        for title in self.document.findall(nodes.title):
            if type(title).__name__ in ("exercise_title", "solution_title"):
                _make_subtitle_the_message(title)
        for node, message in list(extract_messages(self.document)):
            if not needs_translation(message):
                node["translatable"] = False


def _make_subtitle_the_message(title) -> None:
    """An exercise's title is "Exercise" (which sphinx-exercise translates)
    and a subtitle, the directive's argument: the subtitle's text is the
    message. sphinx-exercise gives it no source and later moves its
    children into a new title; so its children are wrapped in one
    translatable ``inline``, with the title's source and the subtitle's
    Markdown (its math between dollars) as the message."""
    title["translatable"] = False
    for subtitle in list(title.findall(nodes.subtitle)):
        children = list(subtitle.children)
        markdown = "".join(
            f"${child.astext()}$"
            if isinstance(child, nodes.math)
            else child.astext()
            for child in children
        )
        wrapper = nodes.inline(markdown, "", translatable=True)
        wrapper.source, wrapper.line = title.source, title.line
        for child in children:
            subtitle.remove(child)
            wrapper += child
        subtitle += wrapper


class AdoptTranslatedNodes(SphinxTransform):
    """Make the page the document of every node a translation brought in.

    Sphinx parses each translation as a small document of its own and moves
    its nodes into the page; they keep a reference to that small document,
    and so pickling the page's doctree pickled each of them too (with its
    reporter and transformer): a translated chapter's doctree was up to
    nine times the English one, and slower to write and to read back."""

    default_priority = 21  # right after Locale (20)

    def apply(self, **kwargs) -> None:
        if _is_a_translation(self.document):
            return
        for node in self.document.findall():
            if node._document is not None and node._document is not (
                self.document
            ):
                node._document = None  # its parent's, that is, the page's


class RefreshExerciseRegistry(SphinxTransform):
    """sphinx-exercise keeps a copy of each exercise, taken when the page
    was parsed, and builds the title of its solution ("Solution to Exercise
    6.1 (...)") from that copy: in the Chinese edition, from the English
    title. The copy is taken again once the page is translated."""

    default_priority = 27  # after Locale (20)

    def apply(self, **kwargs) -> None:
        registry = getattr(self.env, "sphinx_exercise_registry", None)
        if not registry or not _is_chinese(self.config):
            return
        for node in self.document.findall(nodes.Element):
            entry = registry.get(node.get("label"))
            if (
                type(node).__name__
                in ("exercise_node", "exercise_enumerable_node")
                and entry is not None
                and entry.get("docname") == self.env.docname
            ):
                entry["node"] = node.deepcopy()


class TranslateTocCaptions(SphinxTransform):
    """Translate the captions of the toctrees that sphinx-external-toc
    inserts ("Chapters", "Back matter"): it inserts them after Sphinx has
    translated the page (priority 100, Locale's is 20). The gettext builder
    extracts them all the same, so they are in the page's catalogue."""

    default_priority = 101

    def apply(self, **kwargs) -> None:
        if not _is_chinese(self.config):
            return
        if _is_a_translation(self.document):
            return
        from sphinx.locale import init as init_locale
        from sphinx.util.i18n import docname_to_domain

        domain = docname_to_domain(
            self.env.docname, self.config.gettext_compact
        )
        dirs = [str(Path(self.env.srcdir, d)) for d in self.config.locale_dirs]
        catalogue, found = init_locale(dirs, self.config.language, domain)
        for toctree in self.document.findall(addnodes.toctree):
            caption = toctree.get("caption")
            if not caption:
                continue
            translated = catalogue.gettext(caption) if found else caption
            if translated == caption:
                logger.warning(
                    "untranslated message: %r (a toctree caption)",
                    caption,
                    location=toctree,
                    type="book-i18n",
                    subtype="untranslated",
                )
            toctree["caption"] = toctree["rawcaption"] = translated


class CheckTranslated(SphinxTransform):
    """Warn about a message left untranslated or with raw markup."""

    default_priority = 26  # after Locale (20) and its totaliser (25)

    def apply(self, **kwargs) -> None:
        if not _is_chinese(self.config):
            return
        if _is_a_translation(self.document):
            return
        for node, message in extract_messages(self.document):
            if not node.get("translated"):
                logger.warning(
                    "untranslated message: %r (run `make translations`, "
                    "then translate it in locales/zh_CN)",
                    message[:120],
                    location=node,
                    type="book-i18n",
                    subtype="untranslated",
                )
        for text in self.document.findall(nodes.Text):
            parent = text.parent
            if isinstance(
                parent,
                (nodes.literal, nodes.FixedTextElement, nodes.math, nodes.raw),
            ):
                continue
            if _RAW_MARKUP.search(str(text)) and _translated(parent):
                logger.warning(
                    "markup left raw in a translation: %r",
                    str(text)[:120],
                    location=parent,
                    type="book-i18n",
                    subtype="raw-markup",
                )


def _ancestors(node):
    while node is not None:
        yield node
        node = node.parent


def _translated(node) -> bool:
    return any(
        a.get("translated")
        for a in _ancestors(node)
        if isinstance(a, nodes.Element)
    )


def _retrieve_glue_data(original):
    """``retrieve_glue_data`` that falls back to the page being translated.

    MyST-NB keeps a notebook's glued values on the document only while it
    parses the notebook, and writes them to ``<page>.glue.json`` in its
    output folder; a translation is parsed later, as a document of its own,
    so its values are read from that file.
    """
    from myst_nb.core.variables import VariableOutput

    def retrieve(document, key):
        env = getattr(document.settings, "env", None)
        if "nb_renderer" not in document and env is not None:
            path = Path(env.mystnb_config.output_folder).joinpath(
                *env.docname.split("/")
            )
            path = path.with_name(path.name + ".glue.json")
            values = json.loads(path.read_text()) if path.exists() else {}
            if key in values:
                return VariableOutput(
                    data=values[key]["data"],
                    metadata=values[key].get("metadata", {}),
                    nb_renderer=None,
                    vtype="glue",
                )
        return original(document, key)

    return retrieve


class _TermList(list):
    """A list whose ``in`` is a set lookup."""

    def __init__(self):
        super().__init__()
        self._members = set()

    def extend(self, items) -> None:
        items = list(items)
        super().extend(items)
        self._members.update(items)

    def __contains__(self, item) -> bool:
        return item in self._members


def _index_latin_terms_in_a_set() -> None:
    """Sphinx 7.4's Chinese search indexer keeps every Latin word it has
    seen in a list and asks ``word in list`` for every word it stems: 8
    of the Chinese build's 25 CPU-seconds. The same words in a set."""
    from sphinx.search.zh import SearchChinese

    init = SearchChinese.init

    def init_with_a_set(self, options) -> None:
        init(self, options)
        self.latin_terms = _TermList()

    SearchChinese.init = init_with_a_set


def _make_documents_with_cached_settings() -> None:
    """MyST-Parser 3.0's renderer calls ``make_document()`` for a default it
    does not use (``options.get("document", make_document())``), and each
    call builds docutils' default settings anew, an option parser and all.
    Sphinx parses every translation twice, so the Chinese build made 1 900
    of them: 4 of its 30 CPU-seconds. The default settings are the same
    every time; they are built once and copied."""
    import copy

    from docutils.frontend import get_default_settings
    from docutils.utils import new_document
    from myst_parser.mdit_to_docutils import base

    settings = {}

    def make_document(source_path="notset", parser_cls=base.RSTParser):
        if parser_cls not in settings:
            settings[parser_cls] = get_default_settings(parser_cls)
        return new_document(
            source_path, settings=copy.copy(settings[parser_cls])
        )

    base.make_document = make_document


def _configure_edition(app, config) -> None:
    if _is_chinese(config):
        config.html_title = ZH_TITLE
        if config.html_theme == "sphinx_book_theme":
            options = dict(config.html_theme_options or {})
            options["search_bar_text"] = ZH_SEARCH
            config.html_theme_options = options
        # the only cells the book folds are inputs (tag hide-input)
        config.nb_code_prompt_show = "显示代码"
        config.nb_code_prompt_hide = "隐藏代码"
        config.togglebutton_hint = "点击显示"
        config.togglebutton_hint_hide = "点击隐藏"


def _keep_notebook_outputs_out_of_the_site(app) -> None:
    """MyST-NB writes each notebook and its glued values to
    ``<outdir>/../jupyter_execute``; for the Chinese edition, built into
    ``_build/html/zh``, that is inside the English site. It writes them to
    ``_build/jupyter_execute-zh`` instead (read back by
    ``_retrieve_glue_data``)."""
    if not _is_chinese(app.config) or not hasattr(app.env, "mystnb_config"):
        return
    folder = Path(app.outdir).parent.parent / "jupyter_execute-zh"
    app.env.mystnb_config = app.env.mystnb_config.copy(
        output_folder=str(folder.resolve())
    )


def _other_editions(app):
    here = app.config.language or "en"
    return [
        (lang, folder, text)
        for lang, (folder, text) in EDITIONS.items()
        if lang != here
    ]


def _add_language_link(app, pagename, templatename, context, doctree):
    """Link the page to the same page in the other edition."""
    if doctree is None:  # genindex, search: generated, not the book's pages
        return
    here_folder = EDITIONS.get(app.config.language or "en", ("", ""))[0]
    label = "语言" if _is_chinese(app.config) else "Language"
    to_root = "../" * pagename.count("/") + ("../" if here_folder else "")
    links, alternates = [], []
    for lang, folder, text in _other_editions(app):
        href = f"{to_root}{folder + '/' if folder else ''}{pagename}.html"
        code = HTML_LANG[lang]
        links.append(
            f'<a class="language-switch-link" href="{href}" '
            f'hreflang="{code}" lang="{code}">'
            '<i class="fa-solid fa-language" aria-hidden="true"></i> '
            f"{text}</a>"
        )
        alternates.append(
            f'<link rel="alternate" hreflang="{code}" href="{href}" />'
        )
    context["body"] = (
        f'<nav class="language-switch" aria-label="{label}">'
        + " ".join(links)
        + "</nav>\n"
        + context.get("body", "")
    )
    context["metatags"] = context.get("metatags", "") + "\n".join(alternates)


def setup(app):
    from myst_nb.ext.glue import roles

    roles.retrieve_glue_data = _retrieve_glue_data(roles.retrieve_glue_data)
    app.add_transform(MarkUntranslated)
    app.add_transform(AdoptTranslatedNodes)
    app.add_transform(CheckTranslated)
    app.add_transform(TranslateTocCaptions)
    app.add_transform(RefreshExerciseRegistry)
    _index_latin_terms_in_a_set()
    _make_documents_with_cached_settings()
    # before the extensions that read these settings at config-inited
    app.connect("config-inited", _configure_edition, priority=100)
    app.connect("html-page-context", _add_language_link)
    # after MyST-NB sets its output folder (builder-inited, priority 500)
    app.connect("builder-inited", _keep_notebook_outputs_out_of_the_site, 600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
