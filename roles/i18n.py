"""Text for learners, in the reader's language, from gettext catalogs (the machinery).

It lives in ``roles`` because a role needs it too (the Profesor's panel is served in the
reader's language), and roles never import the CLI package above them;
:mod:`ayudantia.i18n` re-exports it for the commands and lessons.

The sources are ``.po`` files under ``ayudantia/locale/<lang>/LC_MESSAGES/<domain>.po``.
Babel reads and compiles them in memory the first time a language is asked for, so there is
no build step and no compiled file to keep in sync: a translator adds a language by adding a
directory with its ``.po`` files, without touching code.

A message id is the English text itself, so an untranslated message still reads well in
English. Role traces are not learner text: they stay in Spanish in the code, as the notebook
has them.
"""

from __future__ import annotations

import functools
import gettext
import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

# The catalogs are data shipped in the ayudantia package (translators edit them in one
# place); this finds them on disk beside this package, without importing ayudantia.
LOCALE_DIR = Path(__file__).resolve().parents[1] / "ayudantia" / "locale"
DOMAIN = "ayudantia"
FALLBACK = "en"
_LOCALE_VARS = ("LC_ALL", "LC_MESSAGES", "LANG")


def languages() -> list[str]:
    """The languages that have a catalog, sorted (a new directory is a new language)."""
    return sorted(p.name for p in LOCALE_DIR.iterdir() if (p / "LC_MESSAGES").is_dir())


def default_lang(env: Mapping[str, str] | None = None) -> str:
    """The reader's language from the locale, as gettext looks it up.

    The first of ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` that is set and not empty decides:
    Spanish when it starts with ``es`` (``es_CL.UTF-8``), English otherwise (``C``, ``POSIX``,
    ``en_US``, anything without a catalog).
    """
    env = os.environ if env is None else env
    for var in _LOCALE_VARS:
        value = env.get(var, "")
        if value:
            code = value.split(".", 1)[0].split("_", 1)[0].lower()
            return code if code in languages() else FALLBACK
    return FALLBACK


@functools.cache
def translations(lang: str, domain: str = DOMAIN) -> gettext.NullTranslations:
    """The catalog of ``domain`` in ``lang``; English text passes through when there is none."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{domain}.po"
    if not po.is_file():
        return gettext.NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=lang, domain=domain)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def translator(lang: str, domain: str = DOMAIN) -> Callable[[str], str]:
    """``_`` for one language: ``_("The book arrived whole")`` gives the reader's text."""
    return translations(lang, domain).gettext


def catalog_ids(lang: str, domain: str = DOMAIN) -> dict[str, str]:
    """Every message id of a catalog with its translation ("" when untranslated), for tests."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{domain}.po"
    with po.open("rb") as source:
        catalog = read_po(source, locale=lang, domain=domain)
    return {str(m.id): str(m.string or "") for m in catalog if m.id}
