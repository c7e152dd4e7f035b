"""Part 5: the book's round trip per codec x content encoding x link, through ``ayudantia proxy``.

On loopback the codec decides everything and the network nothing; on a real link the bytes
on the wire cost time, and compression can pay for its CPU. Each case is a round trip of
the notebook's message with the whole book as "Texto" (see :mod:`ayudantia.netbench`): the
client encodes and compresses, the proxy shapes the link both ways, the eco (a process
accepting every codec) decodes and answers in the same codec and encoding.

Links: loopback (direct), 1 Gbit/s with 1 ms, 100 Mbit/s with 10 ms, 10 Mbit/s with 40 ms
(rate both ways, delay each way). bench.report adds the table, the winner per link and the
break-even bandwidth per codec; bench.plots draws them.

The ordinary ``uv run pytest`` runs a tiny matrix once, untimed: msgpack, none and zstd,
direct and 100 Mbit/s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from ayudantia import netbench
from ayudantia.netbench import LINKS, LinkCase
from bench.conftest import benchmarking_enabled, rounds

NETWORK_CODECS = ("json", "msgpack", "pickle", "cbor")
NETWORK_ENCODINGS = ("none", "lz4", "zstd")
# A 10 Mbit/s round trip of the uncompressed book is ~3.5 s: rounds fall with the rate.
NETWORK_ROUNDS = {"direct": 15, "1gbit-1ms": 10, "100mbit-10ms": 5, "10mbit-40ms": 3}
QUICK = [("msgpack", enc, link) for link in ("direct", "100mbit-10ms") for enc in ("none", "zstd")]
_BY_NAME = {link.name: link for link in LINKS}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "net_case" not in metafunc.fixturenames:
        return
    if benchmarking_enabled(metafunc.config):
        cases = [
            (c, e, link.name) for link in LINKS for c in NETWORK_CODECS for e in NETWORK_ENCODINGS
        ]
    else:
        cases = QUICK
    metafunc.parametrize("net_case", cases, ids=["-".join(c) for c in cases])


@pytest.fixture(scope="module")
def network() -> Iterator[dict[str, tuple[str, int]]]:
    """The eco and one proxy per link, each a process, started on first use."""
    with contextlib.ExitStack() as stack:
        eco = stack.enter_context(netbench.eco_process())
        addresses: dict[str, tuple[str, int]] = {"direct": eco}

        class Lazy(dict):
            def __missing__(self, name: str) -> tuple[str, int]:
                link: LinkCase = _BY_NAME[name]
                self[name] = stack.enter_context(netbench.proxy_process(link, eco))
                return self[name]

        yield Lazy(addresses)


@pytest.mark.timeout(600)
def test_network_round_trip(benchmark, benchmarking, net_case, network, book_text):
    codec, encoding, link_name = net_case
    link = _BY_NAME[link_name]
    obj = netbench.book_object(codec, book_text)
    benchmark.group = f"network {link_name}"
    with netbench.connect(network[link_name], codec, encoding) as conn:
        _seconds, wire = benchmark.pedantic(
            netbench.round_trip,
            args=(conn, obj),
            rounds=rounds(benchmarking, NETWORK_ROUNDS[link_name]),
            warmup_rounds=1 if benchmarking else 0,
        )
    assert wire > 0
    benchmark.extra_info.update(
        kind="network",
        codec=codec,
        encoding=encoding,
        link=link_name,
        rate_bps=link.rate_bps,
        delay_s=link.delay,
        wire_bytes=wire,
        text_bytes=len(book_text.encode("utf-8")),
        load_avg=round(os.getloadavg()[0], 2),  # a shared 2-core machine: say how shared
    )
