"""One rule per kind of setting: what each accepts, what it refuses, whatever the source."""

from __future__ import annotations

import pytest

from ayudantia import rules
from ayudantia.rules import Invalid

GOOD = [
    (rules.PORT, "0", 0),
    (rules.PORT, 65535, 65535),
    (rules.HOSTPORT, "[::1]:4445", ("::1", 4445)),
    (rules.HOSTPORT, ":4445", ("127.0.0.1", 4445)),
    (rules.HOSTPORT, "localhost:1", ("localhost", 1)),
    (rules.HOST, "0.0.0.0", "0.0.0.0"),
    (rules.URL, "127.0.0.1:9/", "http://127.0.0.1:9"),
    (rules.CHUNK_SIZE, "64KiB", 65536),
    (rules.CHUNK_SIZE, "1m", 1024**2),
    (rules.CHUNK_SIZE, 0, 0),
    (rules.MAX_MESSAGE, "64M", 64 * 1024**2),
    (rules.seconds(), "0", None),
    (rules.seconds(), 2, 2.0),
    (rules.pace(), "0", 0.0),
    (rules.choice(rules.LOG_LEVELS), "debug", "DEBUG"),
    (rules.codec_rule(), "raw", "raw"),
]

BAD = [
    (rules.PORT, "70000"),
    (rules.PORT, True),
    (rules.PORT, 4445.0),
    (rules.HOSTPORT, "127.0.0.1:70000"),
    (rules.HOSTPORT, "127.0.0.1:0"),
    (rules.HOSTPORT, "::1:4445"),
    (rules.HOSTPORT, "no port"),
    (rules.HOSTPORT, 5),
    (rules.HOST, ""),
    (rules.HOST, "bad host"),
    (rules.URL, "http://127.0.0.1:70000"),
    (rules.URL, "ftp://127.0.0.1:21"),
    (rules.CHUNK_SIZE, "1.5M"),
    (rules.CHUNK_SIZE, 4096.5),
    (rules.CHUNK_SIZE, True),
    (rules.CHUNK_SIZE, "-1"),
    (rules.MAX_MESSAGE, "0"),
    (rules.seconds(), "-1"),
    (rules.seconds(), "inf"),
    (rules.seconds(), "nan"),
    (rules.seconds(unlimited=False), "0"),
    (rules.pace(), "inf"),
    (rules.integer(1), "1.0"),
    (rules.integer(1), "0"),
    (rules.choice(rules.LOG_LEVELS), "FOO"),
    (rules.codec_rule(needs_maps=True), "raw"),
    (rules.SECRET, ""),
    (rules.NAME, "x" * 65),
]


@pytest.mark.parametrize(("rule", "raw", "value"), GOOD)
def test_accepts(rule, raw, value):
    assert rule(raw) == value


@pytest.mark.parametrize(("rule", "raw"), BAD)
def test_refuses(rule, raw):
    with pytest.raises(Invalid):
        rule(raw)
    assert rule.allowed  # the error can always say what is allowed


def test_paths_never_create_anything(tmp_path):
    missing = tmp_path / "no" / "such"
    for rule in (rules.OUTPUT_FILE, rules.DATABASE, rules.OUTPUT_DIR):
        with pytest.raises(Invalid, match="does not exist"):
            rule(str(missing / "x"))
    assert not (tmp_path / "no").exists()
    assert rules.OUTPUT_DIR(str(tmp_path / "new")) == str(tmp_path / "new")  # parent exists
    with pytest.raises(Invalid, match="is a directory"):
        rules.OUTPUT_FILE(str(tmp_path))
