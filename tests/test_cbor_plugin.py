"""The CBOR plug-in (plugins/ayudantia-cbor): found through its entry point, or refused clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import cbor2
import pytest

from protocol import codecs
from protocol.errors import DecodeError, EncodeError, UnknownCodec
from protocol.transport import Connection
from tests.procs import ayudantia_cmd, running
from tests.test_encodings import BOOKISH

REPO = Path(__file__).resolve().parents[1]
MESSAGE = {"titulo": "Don Quijote de la mancha", "año": 1605, "Texto": BOOKISH.decode()}


def test_the_entry_point_registers_cbor_as_id_64() -> None:
    (ep,) = [ep for ep in entry_points(group="ayudantia.codecs") if ep.name == "cbor"]
    assert ep.value == "ayudantia_cbor:codec"
    codec = codecs.get("cbor")
    assert (codec.id, codec.safe, codecs.get(64)) == (64, True, codec)
    assert "cbor" in codecs.available()
    assert codec.decode(codec.encode(MESSAGE)) == MESSAGE
    assert codec.encode(MESSAGE) == cbor2.dumps(MESSAGE)  # plain RFC 8949, any reader


@pytest.mark.parametrize(
    "hostile",
    [
        b"\x9b\x00\x00\x00\x10\x00\x00\x00\x00",  # an array of 2**36 items, in 9 bytes
        b"\xbb\x00\x00\x00\x00\xff\xff\xff\xff",  # a map of 4 billion pairs
        b"\x7a\xff\xff\xff\xff",  # a 4 GiB text string, absent
        b"\xd8\x23\x63abc",  # tag 35: a regular expression to compile
        b"\xc1\x1a\x00\x00\x00\x00",  # tag 1: a datetime object
        b"\x9f\x01\xff",  # indefinite length
        b"\x01\x02",  # trailing bytes
        b"\x82\x01",  # truncated
        b"",
        b"\xf7",  # undefined: cbor2's own object, not plain data
        b"\xf8\x63",  # simple value 99: a CBORSimpleValue
        b"\xf0",  # simple value 16, unassigned
        b"\xa1\x80\x00",  # a map keyed by an array: a tuple key
        b"\xa1\xa0\x00",  # a map keyed by a map: a frozendict key
        b"\xa1\x01\xa1\x82\x01\x02\x00",  # a container key one level down
        b"\xfc",  # reserved additional information 28
        b"\x81" * 100_000 + b"\x00",  # nested 100,000 deep
        b"\x9a\x00\x0f\x42\x41" + bytes(1_000_001),  # one item more than the walk's cap
    ],
)
def test_hostile_cbor_is_a_decode_error_before_allocating(hostile: bytes) -> None:
    with pytest.raises(DecodeError, match="cbor"):
        codecs.get("cbor").decode(hostile, max_message=len(hostile) + 1024)


def test_plain_scalars_and_nesting_up_to_cbor2s_limit_still_decode() -> None:
    codec = codecs.get("cbor")
    plain = {"a": [False, True, None, 1.5, -(2**64), b"x"], 1: {"b": "c"}, 2.5: []}
    assert codec.decode(cbor2.dumps(plain)) == plain
    assert codec.decode(b"\x81" * 300 + b"\x00") is not None


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (1.5, "f93e00"),  # RFC 8949 §4.2's own example: half precision
        (0.0, "f90000"),
        (-0.0, "f98000"),
        (65504.0, "f97bff"),  # the largest half
        (5.960464477539063e-08, "f90001"),  # the smallest half subnormal
        (100000.0, "fa47c35000"),  # single: no half holds it
        (3.4028234663852886e38, "fa7f7fffff"),  # the largest single
        (0.1, "fb3fb999999999999a"),  # only a double gives 0.1 back
        (1e300, "fb7e37e43c8800759c"),
        (float("inf"), "f97c00"),
        (float("-inf"), "f9fc00"),
    ],
)
def test_floats_take_the_shortest_width_that_round_trips(value: float, wire: str) -> None:
    codec = codecs.get("cbor")
    assert codec.encode(value).hex() == wire
    back = codec.decode(bytes.fromhex(wire))
    assert back == value and str(back) == str(value)  # -0.0 keeps its sign


def test_nan_is_the_half_precision_quiet_nan() -> None:
    codec = codecs.get("cbor")
    assert codec.encode(float("nan")).hex() == "f97e00"
    assert codec.decode(codec.encode([float("nan")]))[0] != codec.decode(b"\x81\xf9\x7e\x00")[0]


@pytest.mark.parametrize("big", [2**64, -(2**64) - 1, 10**40, -(10**40)])
def test_integers_past_64_bits_are_refused_at_encode_as_the_decoder_refuses_them(big: int) -> None:
    codec = codecs.get("cbor")
    with pytest.raises(EncodeError, match="outside -2\\*\\*64"):
        codec.encode({"n": [big]})
    with pytest.raises(DecodeError, match="tag"):  # what cbor2 alone would have written
        codec.decode(cbor2.dumps(big))


def test_the_edges_of_64_bit_integers_round_trip() -> None:
    codec = codecs.get("cbor")
    for edge in (2**64 - 1, -(2**64), 0, -1, True, False):
        assert codec.decode(codec.encode(edge)) == edge
        assert type(codec.decode(codec.encode(edge))) is type(edge)


def test_the_item_cap_counts_every_container(monkeypatch) -> None:
    import ayudantia_cbor

    monkeypatch.setattr(ayudantia_cbor, "MAX_ITEMS", 1000)  # the cap's arithmetic, quickly
    codec = codecs.get("cbor")
    assert codec.decode(cbor2.dumps([0] * 1000)) == [0] * 1000
    assert codec.decode(cbor2.dumps([[0] * 996, {"a": 0}])) is not None  # 2 + 996 + 2 items
    for over in ([0] * 1001, [[0] * 995, {"a": 0, "b": 0}], [[0] * 998, [0]]):
        with pytest.raises(DecodeError, match="more than 1,000 items"):
            codec.decode(cbor2.dumps(over))


def test_an_eco_process_speaks_cbor_compressed(tmp_path: Path) -> None:
    with (
        running("eco", "--port", "0", "--codec", "cbor", "--log-level", "WARNING") as eco,
        Connection.connect(eco.host, eco.port, codec="cbor", read_timeout=5) as conn,
    ):
        conn.send(MESSAGE, chunk_size=1000)
        back = conn.recv_message()
        assert back.codec.name == "cbor" and back.obj == MESSAGE and back.frames > 1


def quijote(book: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        ayudantia_cmd("quijote", "--file", str(book), *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.timeout(90)
def test_quijote_round_trips_in_cbor(tmp_path: Path) -> None:
    book = tmp_path / "libro.txt"
    book.write_bytes(BOOKISH * 5)
    done = quijote(book, "--codec", "cbor", "--compress", "zstd")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "codec        cbor" in done.stdout and "verified     yes" in done.stdout


def environment_without_the_plugin(tmp_path: Path) -> dict[str, str]:
    """A Python whose site-packages is this one's minus the plug-in's distribution.

    ``-S`` skips site.py (and its .pth files), PYTHONPATH gives the repository and a copy of
    site-packages made of symlinks, every entry but ayudantia_cbor's: as if uninstalled.
    """
    site = Path(cbor2.__file__).resolve().parent.parent
    hidden = tmp_path / "site-packages"
    hidden.mkdir()
    for entry in site.iterdir():
        if "ayudantia_cbor" not in entry.name:
            (hidden / entry.name).symlink_to(entry)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(hidden)])}


@pytest.mark.timeout(60)
def test_without_the_plugin_codec_cbor_is_unknown_and_the_rest_remains(tmp_path: Path) -> None:
    env = environment_without_the_plugin(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "from protocol import codecs; print(codecs.available())"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert probe.stdout.strip() == "['raw', 'json', 'pickle', 'msgpack']", probe.stderr
    book = tmp_path / "libro.txt"
    book.write_bytes(BOOKISH)
    done = subprocess.run(
        [
            sys.executable,
            "-S",
            "-m",
            "ayudantia",
            "quijote",
            "--codec",
            "cbor",
            "--file",
            str(book),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "unknown codec 'cbor'" in line and "raw, json, pickle, msgpack" in line, line
    with pytest.raises(UnknownCodec, match="available: raw, json, pickle, msgpack"):
        codecs.Registry(load_plugins=False).get("cbor")
