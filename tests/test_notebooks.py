"""The course notebook redone on ayudantia: built from one script, committed bare, executed.

``notebooks/_build.py`` writes both languages; these tests check that the committed files
are exactly what it writes (so the two never drift) and hold no outputs, then run each one
top to bottom with nbclient on a real ipykernel kernel and read what it printed: the
lessons' defects and fixes, the Quijote's bytes (the API and the CLI must agree), the
class's count, and that every role the notebook started is gone. Without a kernel or the
Quijote they are skipped with the reason; in CI (``CI`` set) they fail instead.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from ayudantia.commands import notebook as command
from ayudantia.quijote import book_message, load_text
from protocol import codecs

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "notebooks"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FILES = {"es": "ayudantia-09.ipynb", "en": "ayudantia-09.en.ipynb"}


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", FOLDER / "_build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; in CI the notebook must run (uv sync installs ipykernel)")
    pytest.skip(reason)


# --- built from one source, committed without outputs --------------------------------------


@pytest.mark.parametrize("lang", sorted(FILES))
def test_build_reproduces_the_committed_notebook(lang: str) -> None:
    built = _build_module().render(lang)
    assert (FOLDER / FILES[lang]).read_text("utf-8") == built, "run notebooks/_build.py"


def test_build_check_flags_a_stale_notebook(tmp_path: Path) -> None:
    build = _build_module()
    build.HERE = tmp_path
    build.write(tmp_path)
    assert build.main(["--check"]) == 0
    stale = tmp_path / FILES["en"]
    stale.write_text(stale.read_text("utf-8").replace("Done right", "Done"), "utf-8")
    assert build.main(["--check"]) == 1


@pytest.mark.parametrize("lang", sorted(FILES))
def test_committed_notebook_has_no_outputs(lang: str) -> None:
    nb = nbformat.read(FOLDER / FILES[lang], as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code)


def test_both_languages_have_the_same_cells_in_the_seed_order() -> None:
    es, en = (nbformat.read(FOLDER / FILES[lang], as_version=4) for lang in ("es", "en"))
    assert [c.cell_type for c in es.cells] == [c.cell_type for c in en.cells]
    heads = [c.source.splitlines()[0] for c in es.cells if c.source.startswith("## ")]
    order = ["JSON", "Pickle", "chunks", "cuatro roles", "Webservices"]
    found = [next(i for i, h in enumerate(heads) if word in h) for word in order]
    assert found == sorted(found)
    assert "Done right" in json.dumps(en.cells) and "Bien hecho" in json.dumps(es.cells)
    assert "Bien hecho" not in json.dumps(en.cells)


# --- executed top to bottom on a real kernel --------------------------------------------


def _kernel() -> None:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        _skip_or_fail("jupyter_client is not installed: no kernel to run the notebook on")
        return
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        _skip_or_fail("no python3 Jupyter kernel (ipykernel) in this environment")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _execute(lang: str, tmp_path: Path) -> str:
    """Run the notebook as a student would; every output's text, cell by cell."""
    from nbclient import NotebookClient

    _kernel()
    if not os.environ.get("AYUDANTIA_QUIJOTE"):
        _skip_or_fail("AYUDANTIA_QUIJOTE is not set: the notebook sends the whole Quijote")
    nb = nbformat.read(FOLDER / FILES[lang], as_version=4)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            texts.append(output.get("text", ""))
    return ANSI.sub("", "\n".join(texts))  # rich's tables are bold in Jupyter


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.timeout(170)  # about 35 s alone, 70 s on a loaded 2-core machine
@pytest.mark.parametrize("lang", sorted(FILES))
def test_notebook_runs_top_to_bottom(lang: str, tmp_path: Path) -> None:
    out = _execute(lang, tmp_path)
    es = lang == "es"
    # every lesson showed its defect and its fix held
    for name in ("recv", "pickle", "chunks", "header", "mixup", "count"):
        verdict = re.search(rf">> {name}: \w+ (\S+) -> \w+ (\S+); [^:]+: (\w+)", out)
        assert verdict, name
        assert verdict.group(3) == "True", verdict.group(0)
    assert re.search(r">> recv: \w+ 4096 -> \w+ (\d+);", out)
    # the pickle lesson: code ran under plain pickle.loads, and nothing ran under the fix
    assert re.search(r">> pickle: \w+ 2 -> \w+ 0;", out)
    assert ("se ejecutó: marcador creado" if es else "ran: marker created") in out
    assert ("rechazado antes de decodificar" if es else "refused before decoding") in out
    assert re.search(r"pickle: (rechazado|refused) \(\w+\)", out)
    # the Quijote's bytes: the API and the CLI measured the same message the same way
    book = len(load_text().encode("utf-8"))
    assert f"{book:,} B UTF-8" in out
    wire = {
        codec: _number(m)
        for codec, m in re.findall(r"^(json|msgpack): [^,]+? ([\d,]+), ", out, re.M)
    }
    both = re.findall(r"wire bytes\s+([\d,]+) up, ([\d,]+) down", out)
    assert all(up == down for up, down in both), both  # the eco answers in the same settings
    cli = [_number(up) for up, _ in both]
    assert wire["json"] == cli[0] and wire["msgpack"] == cli[1], (wire, cli)
    assert wire["json"] > book and wire["msgpack"] > book * 0.95
    # chunked: one frame per 4,096 bytes of the payload, each with the same header
    payload = len(codecs.get("json").encode(book_message(load_text())))
    header = wire["json"] - payload
    chunked = re.search(r"json, chunk 4096: [^\d]+([\d,]+), \w+ (\d+);", out)
    assert chunked, out
    frames = int(chunked.group(2))
    assert frames == math.ceil(payload / 4096) > 500
    assert _number(chunked.group(1)) == payload + frames * header
    assert out.count("verified     yes") == 3
    # the four roles: one student's questions, each counted once by the Profesor
    assert "6/6 respondidas, 0 errores, 0 ajenas, 0 repetidas" in out
    assert re.search(r": 6; .+: Llevamos: 6 preguntas respondidas", out)
    assert re.search(r"Llevamos: 6 preguntas respondidas; .+: Llevamos: 7 preguntas", out)
    # ayudantia run: the whole class, the count exact
    assert "Llevamos: 10 preguntas respondidas; students received 10" in out
    assert re.search(r"result\s+│ OK", out)
    # nothing left running: the last cell stopped every role, and they are gone
    last = re.search(r": 3 \(pids \[(\d+), (\d+), (\d+)\]\); [^:]+: 0$", out.strip(), re.M)
    assert last, out[-400:]
    assert not [pid for pid in map(int, last.groups()) if _alive(pid)]


# --- ayudantia notebook DIR ------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ayudantia", "notebook", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_notebook_command_copies_both_and_says_how_to_open(tmp_path: Path) -> None:
    target = tmp_path / "clase"
    done = _cli(str(target))
    assert done.returncode == 0, done.stderr
    for name in FILES.values():
        assert (target / name).read_bytes() == (FOLDER / name).read_bytes()
    assert f"uv run --with jupyterlab jupyter lab {target}" in done.stdout


def test_notebook_command_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert _cli(str(tmp_path)).returncode == 0
    mine = tmp_path / FILES["es"]
    mine.write_text("my own work", "utf-8")
    refused = _cli(str(tmp_path))
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "--force" in refused.stderr
    assert mine.read_text("utf-8") == "my own work"
    forced = _cli(str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert mine.read_bytes() == (FOLDER / FILES["es"]).read_bytes()


def test_notebook_command_on_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    done = _cli(str(a_file))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr


def test_wheel_ships_the_notebooks(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        _skip_or_fail("uv is not on PATH: cannot build the wheel")
    built = subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in FILES.values():
        assert f"ayudantia/notebooks/{name}" in names
        packaged = zipfile.ZipFile(wheel).read(f"ayudantia/notebooks/{name}")
        assert packaged == (FOLDER / name).read_bytes()
    assert tuple(FILES[lang] for lang in ("es", "en")) == command.FILES
    # installed from the wheel (no checkout beside it), the command copies the packaged ones
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    target = tmp_path / "clase"
    done = subprocess.run(
        [sys.executable, "-m", "ayudantia", "notebook", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(unpacked)},
    )
    assert done.returncode == 0, done.stderr
    assert (
        str(unpacked / "ayudantia" / "notebooks")
        == subprocess.run(
            [
                sys.executable,
                "-c",
                "from ayudantia.commands import notebook; print(notebook.source_dir())",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(unpacked)},
        ).stdout.strip()
    )
    assert (target / FILES["en"]).read_bytes() == (FOLDER / FILES["en"]).read_bytes()
