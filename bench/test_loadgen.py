"""The load generator's own judgement: it must see a misrouted answer when there is one.

tests/test_servers_load.py trusts ``misrouted == 0`` and ``answered == n``; these tests
show those counters can fail, against two small loopback servers in this process: one
routes every answer to its asker, the other answers each question with the id of the
question before it (the notebook's Docencio bug, where answers reached whoever came next).
"""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from bench import loadgen

HEADER = struct.Struct(">2sBBBBI")


async def _serve(misroute: bool, n: int, **kw: object) -> dict:
    last_id: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                question = json.loads(await reader.readexactly(HEADER.unpack(header)[5]))
                qid = last_id[-1] if misroute and last_id else question["id"]
                last_id.append(question["id"])
                body = json.dumps({"id": qid, "respuesta": "ok", "por": "Docencio"}).encode()
                writer.write(HEADER.pack(b"AY", 1, 1, 0, 0, len(body)) + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await loadgen.students("127.0.0.1", port, n=n, **kw)


@pytest.mark.timeout(30)
def test_students_all_answered_by_a_server_that_routes_by_id():
    result = asyncio.run(_serve(False, 50, timeout=10.0))
    assert result["connected"] == result["answered"] == 50
    assert result["misrouted"] == result["errors"] == 0
    assert result["p50_ms"] <= result["max_ms"]


@pytest.mark.timeout(30)
def test_students_sees_answers_that_reach_the_wrong_student():
    result = asyncio.run(_serve(True, 20, timeout=2.0))
    assert result["misrouted"] == 19  # every answer but the first went to someone else
    assert result["answered"] == 1 and result["unanswered"] == 19


def test_percentiles_in_milliseconds():
    assert loadgen.ms([0.003, 0.001, 0.002]) == {"p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 3.0}
    assert loadgen.ms([]) == {"p50_ms": None, "p99_ms": None, "max_ms": None}
