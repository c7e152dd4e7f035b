"""The codec registry: round trips, hostile payloads, the accept-list and plug-ins."""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import json
import os
import pickle
import shlex
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import msgpack
import pytest

from protocol import codecs
from protocol.codecs import DEFAULT_ACCEPT, REGISTRY, Codec, Registry, accept_for
from protocol.errors import (
    CodecClash,
    CodecError,
    ContentDisallowed,
    DecodeError,
    EncodeError,
    UnknownCodec,
)
from protocol.safepickle import SAFE_GLOBALS

OBJECT_CODECS = ["json", "pickle", "msgpack"]


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("name", OBJECT_CODECS)
def test_notebook_message_round_trips(name: str, notebook_message: dict) -> None:
    codec = codecs.get(name)
    payload = codec.encode(notebook_message)
    assert isinstance(payload, bytes)
    back = codec.decode(payload)
    assert back == notebook_message
    assert list(back) == list(notebook_message)  # key order survives


def test_raw_round_trips_bytes_only(notebook_message: dict) -> None:
    raw = codecs.get("raw")
    data = notebook_message["Texto"].encode("utf-8")
    assert raw.encode(data) == data
    assert raw.encode(bytearray(data)) == data
    assert raw.encode(memoryview(data)) == data
    assert raw.decode(bytearray(data)) == data
    # the decoder's buffer is handed over without a copy; a view becomes bytes
    buffer = bytearray(data)
    assert raw.decode(buffer) is buffer
    assert isinstance(raw.decode(memoryview(data)), bytes)
    with pytest.raises(EncodeError) as info:
        raw.encode(notebook_message)
    assert info.value.codec == "raw"


@pytest.mark.parametrize("name", OBJECT_CODECS)
def test_decoders_take_bytearray_and_memoryview(name: str, notebook_message: dict) -> None:
    codec = codecs.get(name)
    payload = codec.encode(notebook_message)
    assert codec.decode(bytearray(payload)) == notebook_message
    assert codec.decode(memoryview(payload)) == notebook_message


@pytest.mark.parametrize("name", OBJECT_CODECS)
def test_book_round_trips(name: str, quijote_text: str) -> None:
    codec = codecs.get(name)
    message = {"titulo": "Don Quijote de la Mancha", "año": 1605, "Texto": quijote_text}
    assert codec.decode(codec.encode(message)) == message


def test_book_round_trips_raw(quijote_text: str) -> None:
    raw = codecs.get("raw")
    data = quijote_text.encode("utf-8")
    assert raw.decode(raw.encode(data)) == data


def test_json_wire_size_of_book_is_close_to_utf8(quijote_text: str) -> None:
    utf8 = quijote_text.encode("utf-8")
    wire = codecs.get("json").encode(quijote_text)
    assert len(wire) <= 1.05 * len(utf8), (len(wire), len(utf8))
    assert b"\\u" not in wire  # ensure_ascii=False: no \u escapes
    assert "ñ".encode() in wire


def test_json_encoding_is_canonical(notebook_message: dict) -> None:
    wire = codecs.get("json").encode(notebook_message)
    assert wire == json.dumps(notebook_message, ensure_ascii=False, separators=(",", ":")).encode()
    assert b": " not in wire and b", " not in wire.replace(b"Mancha, de", b"")
    assert "año".encode() in wire


def test_msgpack_uses_bin_type() -> None:
    codec = codecs.get("msgpack")
    wire = codec.encode({"s": "texto", "b": b"bytes"})
    assert wire == msgpack.packb({"s": "texto", "b": b"bytes"}, use_bin_type=True)
    assert b"\xc4\x05bytes" in wire  # bin8, not str
    assert codec.decode(wire) == {"s": "texto", "b": b"bytes"}


def test_pickle_round_trips_allowed_data_types() -> None:
    codec = codecs.get("pickle")
    obj = {
        "set": {1, 2},
        "frozenset": frozenset({"a"}),
        "bytearray": bytearray(b"xy"),
        "complex": 1 + 2j,
        "slice": slice(1, None, 2),
        "timezone": datetime.timezone(datetime.timedelta(hours=-3)),
        "ordered": collections.OrderedDict(a=1),
        "date": datetime.date(1605, 1, 16),
        "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "delta": datetime.timedelta(days=1),
        "time": datetime.time(12, 30),
        "decimal": decimal.Decimal("1.605"),
        "tuple": (1, "dos", b"tres", None, True, 4.5),
    }
    assert codec.decode(codec.encode(obj)) == obj


@pytest.mark.parametrize(
    ("name", "obj"),
    [("json", float("nan")), ("json", float("inf")), ("json", {1j}), ("msgpack", {1, 2})],
)
def test_encode_errors_name_the_codec(name: str, obj: object) -> None:
    with pytest.raises(EncodeError) as info:
        codecs.get(name).encode(obj)
    assert info.value.codec == name
    assert str(info.value).startswith(f"{name}:")


@pytest.mark.parametrize(
    "obj",
    [
        [1, {"a": (2.0, float("nan"))}],
        {"x": [[[float("-inf")]]]},
        ({"deep": [float("inf")]},),
        {1: float("nan")},  # a non-str key takes the fallback encoder
        [2**70, float("nan")],  # so does an integer beyond 64 bits
    ],
)
def test_json_refuses_nested_non_finite_floats(obj: object) -> None:
    with pytest.raises(EncodeError) as info:
        codecs.get("json").encode(obj)
    assert info.value.codec == "json"


@pytest.mark.timeout(10)
def test_json_refuses_cycles_without_hanging() -> None:
    loop: list = []
    loop.append(loop)
    mapping: dict = {}
    mapping["self"] = [mapping]
    for obj in (loop, mapping):
        with pytest.raises(EncodeError):
            codecs.get("json").encode(obj)


def test_json_encodes_shared_subobjects() -> None:
    shared = [1.5, "ñ"]
    obj = {"a": shared, "b": [shared, shared], "big": 2**70, "k": {1: shared}}
    wire = codecs.get("json").encode(obj)
    assert codecs.get("json").decode(wire) == {
        "a": shared,
        "b": [shared, shared],
        "big": 2**70,
        "k": {"1": shared},
    }


# --- hostile and malformed payloads ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("json", b'{"a":'),
        ("json", b""),
        ("json", b"{} {}"),
        ("json", b'"\xff"'),  # invalid UTF-8
        ("json", b'"\xed\xa0\x80"'),  # UTF-8-encoded surrogate
        ("json", '"año"'.encode("utf-16")),  # not UTF-8; must not be guessed
        ("json", b"NaN"),
        ("json", b"[Infinity]"),
        ("json", b'{"x":-Infinity}'),
        ("msgpack", b"\xc1"),  # a never-used type byte
        ("msgpack", b""),
        ("msgpack", b"\x92\x01"),  # array of two with one item
        ("msgpack", b"\xdd\xff\xff\xff\xff"),  # array32 declaring 4 billion items
        ("msgpack", b"\xdf\xff\xff\xff\xff"),  # map32 declaring 4 billion pairs
        ("msgpack", b"\xdb\xff\xff\xff\xff"),  # str32 declaring 4 GiB
        ("msgpack", b"\xc6\xff\xff\xff\xff"),  # bin32 declaring 4 GiB
        ("msgpack", b"\x81\x90\x01"),  # map with a list key
        ("msgpack", b"\xa2\xff\xfe"),  # str with invalid UTF-8
        ("msgpack", b"\x01\x02"),  # extra data after the object
        ("pickle", pickle.dumps({"a": list(range(100))})[:-7]),  # truncated
        ("pickle", b""),
        ("pickle", b"not a pickle"),
    ],
)
def test_malformed_payload_is_a_decode_error(name: str, payload: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(DecodeError) as info:
        codecs.get(name).decode(payload)
    assert time.perf_counter() - start < 1.0  # refused, not allocated and then refused
    assert info.value.codec == name
    assert str(info.value).startswith(f"{name}: malformed payload")
    assert isinstance(info.value, CodecError)


def test_deep_nesting_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        codecs.get("json").decode(b"[" * 100_000 + b"]" * 100_000)
    assert info.value.codec == "json"


def test_msgpack_limit_follows_max_message() -> None:
    codec = codecs.get("msgpack")
    payload = codec.encode(["x"] * 20)
    assert codec.decode(payload, max_message=len(payload)) == ["x"] * 20
    with pytest.raises(DecodeError):
        codec.decode(payload, max_message=10)


def _marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _reducers(marker: Path) -> dict[str, tuple]:
    code = _marker_code(marker)
    return {
        "os.system": (os.system, (f"touch {shlex.quote(str(marker))}",)),
        "builtins.eval": (eval, (code,)),
        "builtins.exec": (exec, (code,)),
        "subprocess.call": (subprocess.call, (["touch", str(marker)],)),
        "builtins.__import__": (__import__, ("this_module_does_not_exist_but_is_asked_for",)),
    }


class _Evil:
    def __init__(self, reduce_value: tuple) -> None:
        self._reduce_value = reduce_value

    def __reduce__(self) -> tuple:
        return self._reduce_value


def _evil_pickle(marker: Path, which: str) -> bytes:
    return pickle.dumps({"harmless": [1, 2], "payload": _Evil(_reducers(marker)[which])})


@pytest.mark.parametrize(
    "which", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"]
)
def test_evil_pickle_is_live(which: str, tmp_path: Path) -> None:
    """Control: these payloads really do run code under plain pickle.loads."""
    marker = tmp_path / "pwned"
    pickle.loads(_evil_pickle(marker, which))
    assert marker.exists()


@pytest.mark.parametrize(
    "which",
    ["os.system", "builtins.eval", "builtins.exec", "subprocess.call", "builtins.__import__"],
)
def test_restricted_unpickler_refuses_code(which: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _evil_pickle(marker, which)
    with pytest.raises(DecodeError) as info:
        codecs.get("pickle").decode(payload)
    assert info.value.codec == "pickle"
    assert "not allowed" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\ngetattr\n(S'x'\nS'y'\ntR.",  # protocol 0 GLOBAL, no __reduce__ involved
        b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94.",  # STACK_GLOBAL
        b"(cos\nsystem\nS'true'\ni.",  # INST
    ],
)
def test_restricted_unpickler_refuses_hand_written_globals(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        codecs.get("pickle").decode(payload)
    assert "not allowed" in str(info.value)


# --- issue 15, defect 9: no allowed callable allocates from a peer's integer -------------

# What ``pickle.dumps(x, protocol=4)`` writes for an object whose __reduce__ is
# ``(bytearray, (2**31,))``: 48 bytes that would build a 2 GiB bytearray.
BYTEARRAY_BOMB = (
    b"\x80\x04"  # PROTO 4
    + b"\x95"
    + (37).to_bytes(8, "little")  # FRAME 37
    + b"\x8c\x08builtins\x94"  # SHORT_BINUNICODE 'builtins', MEMOIZE
    + b"\x8c\x09bytearray\x94"  # SHORT_BINUNICODE 'bytearray', MEMOIZE
    + b"\x93\x94"  # STACK_GLOBAL, MEMOIZE
    + b"\x8a\x05"
    + (2**31).to_bytes(5, "little")  # LONG1 2**31
    + b"\x85\x94R\x94."  # TUPLE1, MEMOIZE, REDUCE, MEMOIZE, STOP
)
# ...and for ``(frozenset, (range(0, 3 * 10**7, 1),))``: 66 bytes, thirty million ints.
FROZENSET_BOMB = (
    b"\x80\x04"  # PROTO 4
    + b"\x95"
    + (55).to_bytes(8, "little")  # FRAME 55
    + b"\x8c\x08builtins\x94"  # SHORT_BINUNICODE 'builtins', MEMOIZE
    + b"\x8c\x09frozenset\x94\x93\x94"  # 'frozenset', MEMOIZE, STACK_GLOBAL, MEMOIZE
    + b"h\x00"  # BINGET 0 ('builtins')
    + b"\x8c\x05range\x94\x93\x94"  # 'range', MEMOIZE, STACK_GLOBAL, MEMOIZE
    + b"K\x00J"
    + (3 * 10**7).to_bytes(4, "little")
    + b"K\x01"  # 0, 30000000, 1
    + b"\x87\x94R\x94"  # TUPLE3, MEMOIZE, REDUCE (range), MEMOIZE
    + b"\x85\x94R\x94."  # TUPLE1, MEMOIZE, REDUCE (frozenset), MEMOIZE, STOP
)


class _Bomb:
    def __init__(self, reduce_value: tuple) -> None:
        self._reduce_value = reduce_value

    def __reduce__(self) -> tuple:
        return self._reduce_value


def test_defect_9_bombs_are_what_pickle_writes() -> None:
    """Defect 9: the hand-built bombs are byte for byte what pickle.dumps makes of them."""
    assert len(BYTEARRAY_BOMB) == 48
    assert len(FROZENSET_BOMB) == 66
    assert pickle.dumps(_Bomb((bytearray, (2**31,))), protocol=4) == BYTEARRAY_BOMB
    inner = _Bomb((range, (0, 3 * 10**7, 1)))
    assert pickle.dumps(_Bomb((frozenset, (inner,))), protocol=4) == FROZENSET_BOMB


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bomb", [BYTEARRAY_BOMB, FROZENSET_BOMB], ids=["bytearray", "frozenset"])
def test_defect_9_pickle_bombs_are_refused(bomb: bytes) -> None:
    """Defect 9: the 48-byte and 66-byte bombs are a DecodeError, and memory stays flat."""
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as info:
            codecs.get("pickle").decode(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "not allowed" in str(info.value)
    assert peak < 1 << 20, peak


@pytest.mark.parametrize("name", ["set", "frozenset", "bytearray", "range"])
def test_defect_9_size_taking_constructors_are_not_allowed(name: str) -> None:
    """Defect 9: none of the constructors that allocate from an integer is reachable."""
    assert ("builtins", name) not in SAFE_GLOBALS
    with pytest.raises(DecodeError, match="not allowed"):
        codecs.get("pickle").decode(pickle.dumps(_Bomb((getattr(builtins, name), ())), 4))


def test_defect_9_sets_and_bytearrays_still_round_trip() -> None:
    """Defect 9: what pickle.dumps writes for sets and bytearrays needs no global at all."""
    codec = codecs.get("pickle")
    obj = [{1, 2}, frozenset({"a"}), bytearray(b"xy"), set(), frozenset(), bytearray()]
    wire = codec.encode(obj)
    assert b"builtins" not in wire
    assert codec.decode(wire) == obj


# --- the registry ----------------------------------------------------------------------
# Built-ins and registration in isolation: load_plugins=False keeps an installed plug-in
# (plugins/ayudantia-cbor) out of these lists; tests/test_cbor_plugin.py covers it.


def test_builtin_ids_and_names() -> None:
    reg = Registry(load_plugins=False)
    assert [(reg.get(n).id, n) for n in reg.available()] == [
        (0, "raw"),
        (1, "json"),
        (2, "pickle"),
        (3, "msgpack"),
    ]
    for n in ("raw", "json", "pickle", "msgpack"):
        assert reg.get(reg.get(n).id) is reg.get(n)
    assert not reg.get("pickle").safe
    assert all(reg.get(n).safe for n in ("raw", "json", "msgpack"))


@pytest.mark.parametrize("key", ["yaml", 4, 99, 255])
def test_unknown_codec_lists_available(key: str | int) -> None:
    with pytest.raises(UnknownCodec) as info:
        Registry(load_plugins=False).get(key)
    assert info.value.key == key
    assert info.value.known == ["raw", "json", "pickle", "msgpack"]
    assert "available: raw, json, pickle, msgpack" in str(info.value)
    assert (f"id {key}" if isinstance(key, int) else repr(key)) in str(info.value)
    assert isinstance(info.value, LookupError)


def _rot13(name: str = "rot13", id: int = 64) -> Codec:
    import codecs as std_codecs

    return Codec(
        name,
        id,
        "text/x-rot13",
        True,
        lambda s: std_codecs.encode(s, "rot13").encode("utf-8"),
        lambda b, _max: std_codecs.decode(str(b, "utf-8"), "rot13"),
        "a plug-in for the tests",
    )


@pytest.mark.parametrize("id", [64, 200, 255])
def test_register_plugin(id: int) -> None:
    reg = Registry(load_plugins=False)
    codec = reg.register(_rot13(id=id))
    assert reg.get("rot13") is codec
    assert reg.get(id) is codec
    assert reg.available()[-1] == "rot13"
    assert codec.decode(codec.encode("Quijote")) == "Quijote"
    assert codec.encode("abc") == b"nop"
    assert "rot13" not in REGISTRY.available()  # a fresh registry is its own


@pytest.mark.parametrize(
    ("name", "id"),
    [
        ("json", 70),  # name taken by a built-in
        ("rot13", 64),  # id taken by a plug-in
        ("rot13b", 64),  # id taken by a plug-in
        ("mine", 4),  # project range
        ("mine", 63),
        ("mine", 1),  # project range and taken
        ("mine", 256),  # not one byte
        ("mine", -1),
    ],
)
def test_register_clash(name: str, id: int) -> None:
    reg = Registry(load_plugins=False)
    reg.register(_rot13())
    with pytest.raises(CodecClash):
        reg.register(_rot13(name, id))
    assert reg.available() == ["raw", "json", "pickle", "msgpack", "rot13"]


def test_accept_checker_refuses_pickle_by_default() -> None:
    check = REGISTRY.accept_checker(DEFAULT_ACCEPT)
    assert {"raw", "json", "msgpack"} == DEFAULT_ACCEPT
    assert check(0).name == "raw"
    assert check(1).name == "json"
    assert check(3).name == "msgpack"
    with pytest.raises(ContentDisallowed) as info:
        check(2)
    assert info.value.codec == "pickle"
    assert info.value.accepted == DEFAULT_ACCEPT
    assert "run code" in str(info.value)
    with pytest.raises(UnknownCodec):
        check(77)


def test_accept_checker_remembers_only_what_it_accepted() -> None:
    """The checker answers a known id from its cache in C; a refusal and an unknown id are
    judged again every time (an id registered later is then found, and judged)."""
    reg = Registry(load_plugins=False)
    reg.register(_rot13())
    check = reg.accept_checker({"raw", "rot13"})
    for _ in range(2):
        with pytest.raises(ContentDisallowed):
            check(1)  # json: known, outside the accept-list
        with pytest.raises(UnknownCodec):
            check(65)  # nobody registered it yet
    assert check(0) is check(0) is reg.get("raw")
    assert check(64) is reg.get("rot13")
    reg.register(_rot13("rot13-late", 65))
    with pytest.raises(ContentDisallowed):
        check(65)  # found now, and refused: it is not on the list
    assert reg.accept_checker({"rot13", "raw"}) is check  # shared per accept-list


def test_accept_checker_rejects_unknown_names() -> None:
    with pytest.raises(UnknownCodec):
        REGISTRY.accept_checker({"json", "jsno"})


def test_accept_for_pickle_warns_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(codecs, "_warned_unsafe", set())
    first = accept_for("pickle")
    second = accept_for("pickle")
    assert first == second == DEFAULT_ACCEPT | {"pickle"}
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("WARNING") == 1
    assert "pickle" in captured.err
    check = REGISTRY.accept_checker(first)
    assert check(2).name == "pickle"


def test_accept_for_safe_codec_is_quiet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(codecs, "_warned_unsafe", set())
    assert accept_for("json") == DEFAULT_ACCEPT
    assert accept_for("msgpack", base={"json"}) == {"json", "msgpack"}
    assert accept_for("pickle", warn=False) == DEFAULT_ACCEPT | {"pickle"}
    assert capsys.readouterr().err == ""
    with pytest.raises(UnknownCodec):
        accept_for("yaml")


def test_accept_for_warns_in_a_fresh_process() -> None:
    """The warning goes to stderr, never stdout (stdout may carry data)."""
    code = (
        "from protocol.codecs import accept_for\n"
        "accept_for('pickle'); accept_for('pickle')\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.stdout == "ok\n"
    assert result.stderr.count("WARNING") == 1
