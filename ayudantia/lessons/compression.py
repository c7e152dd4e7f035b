"""compression: figures taken on loopback say compression only costs; a real link says otherwise.

Every figure in the notebook (and in most students' first benchmarks) is taken on
loopback, at gigabytes per second and no latency: there the codec decides everything and
the network nothing, so compressing the book only adds CPU time. Over an emulated
100 Mbit/s, 10 ms link (``ayudantia proxy``, the same process a class can put on each hop
with ``run --network``) the bytes saved are worth more than the CPU spent. The lesson
measures both, and the bandwidth below which zstd pays on this machine.
"""

from __future__ import annotations

import random

from ayudantia import netbench
from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row, T

NAME = "compression"
SECTION = "«Envío utilizando JSON», «Pickle» (the book sent whole)"
PATTERN = N_("the book sent uncompressed, judged by loopback figures")
DEFECT = N_(
    "the notebook's message with the book, as msgpack, sent uncompressed to an eco and "
    "back: over loopback and through ayudantia proxy on an emulated link"
)
FIX = N_(
    "the same message with --compress zstd: header byte 5 says zstd and each frame's "
    "payload is compressed on its own"
)
WHY = N_(
    "on loopback the bytes cost almost nothing and compressing costs CPU, so zstd loses; "
    "on a real link every byte saved is time saved on the wire, and below a break-even "
    "bandwidth the saving is larger than the CPU spent compressing and decompressing."
)
FIX_AT = (
    "protocol/encodings.py (the zstd and lz4 encodings, size checks before inflating); "
    "protocol/framing.py pack_header (byte 5); ayudantia/netem.py Proxy (the emulated link)"
)
HEADLINE = "link"
# --quick: a part of the book on a slower link, so the lesson fits in 3 s and the saving on
# the wire stays far larger than the CPU zstd spends, even on a loaded machine.
QUICK_BYTES = 250_000
LINK, QUICK_LINK = netbench.LINKS[2], netbench.LINKS[3]  # 100 Mbit/s 10 ms; 10 Mbit/s 40 ms
# Without the book on disk: words of its first sentence in a seeded random order. The other
# lessons repeat one sentence, which zstd compresses at gigabytes per second; prose-like text
# compresses about as slowly as the book does, so the lesson teaches the same thing.
_WORDS = [
    "En",
    "un",
    "lugar",
    "de",
    "la",
    "Mancha",
    "de",
    "cuyo",
    "nombre",
    "no",
    "quiero",
    "acordarme",
    "no",
    "ha",
    "mucho",
    "tiempo",
    "que",
    "vivía",
    "un",
    "hidalgo",
    "de",
    "los",
    "de",
    "lanza",
    "en",
    "astillero",
    "adarga",
    "antigua",
    "rocín",
    "flaco",
    "y",
    "galgo",
    "corredor",
]


def _stand_in(size: int) -> str:
    rng = random.Random(2000)  # Project Gutenberg's number for the book
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def _case(result: dict, link: str, encoding: str) -> dict:
    return next(c for c in result["cases"] if c["link"] == link and c["encoding"] == encoding)


def run(ctx: Context) -> Outcome:
    text, real = lo.book_text()
    if not real:
        text = _stand_in(len(text))
    text = ctx.pick(text[:QUICK_BYTES], text)
    shaped = ctx.pick(QUICK_LINK, LINK)
    result = netbench.compression_lesson(text, rounds=ctx.pick(1, 3), link=shaped)
    here = {e: _case(result, "direct", e) for e in ("none", "zstd")}
    link = {e: _case(result, shaped.name, e) for e in ("none", "zstd")}
    rows = [
        Row(
            "wire",
            N_("bytes on the wire, each way"),
            *(Q(here[e]["wire_bytes"], "B") for e in ("none", "zstd")),
        ),
        Row(
            "loopback",
            N_("round trip on loopback"),
            *(Q(here[e]["seconds"], "s") for e in ("none", "zstd")),
        ),
        Row(
            "link",
            N_("round trip over the emulated link"),
            *(Q(link[e]["seconds"], "s") for e in ("none", "zstd")),
        ),
    ]
    breakeven = result["break_even_bps"]
    notes = [
        T(
            "the emulated link: {rate}, {delay} each way",
            rate=Q((shaped.rate_bps or 0) / 1e6, "Mbit/s"),
            delay=Q(shaped.delay, "s"),
        )
    ]
    if breakeven is not None and breakeven != float("inf"):
        notes.append(T("zstd pays below {rate} on this machine", rate=Q(breakeven / 1e6, "Mbit/s")))
    return Outcome(
        rows,
        defect_showed=here["zstd"]["seconds"] > here["none"]["seconds"],
        fix_held=(
            here["zstd"]["wire_bytes"] < here["none"]["wire_bytes"]
            and link["zstd"]["seconds"] < link["none"]["seconds"]
        ),
        notes=notes,
    )
