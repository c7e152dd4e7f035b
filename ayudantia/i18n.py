"""Text for learners, in the reader's language, from gettext catalogs.

The sources are ``.po`` files under ``ayudantia/locale/<lang>/LC_MESSAGES/<domain>.po``,
read by the machinery in :mod:`roles.i18n` (there so the Profesor's panel can use it
without a role importing this CLI package); this module is where the commands and the
lessons find it, unchanged.
"""

from __future__ import annotations

from roles.i18n import (
    DOMAIN,
    FALLBACK,
    LOCALE_DIR,
    catalog_ids,
    default_lang,
    languages,
    translations,
    translator,
)

__all__ = [
    "DOMAIN",
    "FALLBACK",
    "LOCALE_DIR",
    "catalog_ids",
    "default_lang",
    "languages",
    "translations",
    "translator",
]
