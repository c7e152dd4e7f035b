"""The catalogs: the locale picks the language, and every catalog loads through Babel."""

import pytest

from ayudantia import i18n


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({"LANG": "es_CL.UTF-8"}, "es"),
        ({"LC_ALL": "en_US.UTF-8", "LANG": "es_CL.UTF-8"}, "en"),
        ({"LC_ALL": "", "LC_MESSAGES": "es_ES", "LANG": "en_US"}, "es"),
        ({"LANG": "C"}, "en"),
        ({"LANG": "fr_FR.UTF-8"}, "en"),
        ({}, "en"),
    ],
)
def test_default_language_follows_the_locale(env, lang):
    assert i18n.default_lang(env) == lang


def test_both_languages_have_catalogs_that_translate():
    assert {"es", "en"} <= set(i18n.languages())
    assert i18n.translator("es")("Lesson") == "Lección"
    assert i18n.translator("en")("Lesson") == "Lesson"
    assert i18n.translator("xx")("Lesson") == "Lesson"  # no catalog: the English id


@pytest.mark.parametrize("domain", ["ayudantia", "panel"])
def test_every_spanish_message_is_translated(domain):
    ids = i18n.catalog_ids("es", domain)
    assert ids, "the Spanish catalog is empty"
    missing = [m for m, t in ids.items() if not t]
    assert not missing, f"untranslated in es/{domain}.po: {missing[:5]}"
    assert set(ids) == set(i18n.catalog_ids("en", domain)), "es and en catalogs differ in ids"
