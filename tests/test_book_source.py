"""Where the book comes from: --file, else $AYUDANTIA_QUIJOTE, else a one-time download."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ayudantia import quijote
from ayudantia.quijote import BookUnavailable, book_path, download

BOOK = "En un lugar de la Mancha, de cuyo nombre no quiero acordarme…\n" * 2000


@pytest.fixture
def book_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback serving the 'book' at /pg2000.txt."""
    hits: list[str] = []
    body = BOOK.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path != "/pg2000.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(quijote.ENV_VAR, raising=False)
    monkeypatch.setattr(quijote, "cache_path", lambda: tmp_path / "cache" / quijote.CACHE_NAME)
    return tmp_path / "cache"


def test_file_argument_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("A", encoding="utf-8")
    b.write_text("B", encoding="utf-8")
    monkeypatch.setenv(quijote.ENV_VAR, str(b))
    assert book_path(a) == a
    assert book_path() == b
    assert quijote.load_text() == "B"


def test_missing_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(quijote.ENV_VAR, str(tmp_path / "nope.txt"))
    with pytest.raises(BookUnavailable, match="AYUDANTIA_QUIJOTE"):
        book_path()


def test_downloads_once_into_the_cache(
    book_server: tuple[str, list[str]], cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, hits = book_server
    first = book_path(url=f"{url}/pg2000.txt")
    second = book_path(url=f"{url}/pg2000.txt")
    assert first == second == cache_dir / quijote.CACHE_NAME
    assert first.read_text(encoding="utf-8") == BOOK
    assert hits == ["/pg2000.txt"], "the second call must use the cache"
    err = capsys.readouterr().err
    assert "download" in err and "100.0%" in err, "progress is shown"
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".download-")]


def test_failed_download_leaves_nothing_and_says_what_to_do(
    book_server: tuple[str, list[str]], cache_dir: Path
) -> None:
    url, _ = book_server
    with pytest.raises(BookUnavailable, match="Offline"):
        download(f"{url}/missing.txt", cache_dir / quijote.CACHE_NAME)
    assert not (cache_dir / quijote.CACHE_NAME).exists()
    assert not list(cache_dir.iterdir())


def test_offline_is_a_clear_error(cache_dir: Path) -> None:
    # Port 9 on loopback: nothing listens there, the connection is refused at once.
    with pytest.raises(BookUnavailable, match="--file or AYUDANTIA_QUIJOTE"):
        book_path(url="http://127.0.0.1:9/pg2000.txt")
