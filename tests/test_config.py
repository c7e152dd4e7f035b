"""Settings precedence for the class's commands: flag > env > TOML [role] > TOML > default."""

from __future__ import annotations

import pytest

from ayudantia.cli import build_parser
from ayudantia.config import ConfigError, resolve


def settings_for(argv: list[str], environ: dict[str, str]) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    return resolve(args, args._command.options(), role=args._command.NAME, environ=environ)


@pytest.fixture
def toml(tmp_path):
    path = tmp_path / "clase.toml"
    path.write_text(
        'codec = "msgpack"\n'
        "chunk_size = 1024\n"
        "[docencio]\n"
        "port = 5000\n"
        'tareo = "10.0.0.1:6000"\n'
        "chunk_size = 2048\n"
        "[estudiante]\n"
        "questions = 7\n",
        encoding="utf-8",
    )
    return str(path)


def test_defaults_follow_the_notebook():
    assert settings_for(["profesor"], {})["port"] == 4444
    t = settings_for(["tareo"], {})
    assert (t["port"], t["profesor"], t["host"]) == (4445, "http://127.0.0.1:4444", "127.0.0.1")
    d = settings_for(["docencio"], {})
    assert (d["port"], d["tareo"], d["codec"]) == (4446, ("127.0.0.1", 4445), "json")
    e = settings_for(["estudiante"], {})
    assert e["docencio"] == ("127.0.0.1", 4446)


def test_toml_role_table_beats_top_level_beats_default(toml):
    d = settings_for(["docencio", "--config", toml], {})
    assert d["codec"] == "msgpack"  # top level
    assert d["chunk_size"] == 2048  # [docencio] beats top level
    assert d["port"] == 5000 and d["tareo"] == ("10.0.0.1", 6000)
    t = settings_for(["tareo", "--config", toml], {})
    assert t["chunk_size"] == 1024 and t["port"] == 4445  # another role's table does not leak
    assert settings_for(["estudiante", "--config", toml], {})["questions"] == 7


def test_environment_beats_toml_and_flag_beats_environment(toml):
    env = {"AYUDANTIA_CHUNK_SIZE": "64K", "AYUDANTIA_CODEC": "pickle", "AYUDANTIA_TAREO": "h:1"}
    d = settings_for(["docencio", "--config", toml], env)
    assert (d["chunk_size"], d["codec"], d["tareo"]) == (65536, "pickle", ("h", 1))
    d = settings_for(["docencio", "--config", toml, "--chunk-size", "3", "--codec", "json"], env)
    assert (d["chunk_size"], d["codec"]) == (3, "json")
    env["AYUDANTIA_CONFIG"] = toml  # the file itself may come from the environment
    assert settings_for(["docencio"], env)["port"] == 5000


def test_profesor_url_and_db(tmp_path):
    t = settings_for(["tareo", "--profesor", "127.0.0.1:9/"], {})
    assert t["profesor"] == "http://127.0.0.1:9"
    p = settings_for(["profesor"], {"AYUDANTIA_DB": str(tmp_path / "x.db")})
    assert p["db"] == str(tmp_path / "x.db")


@pytest.mark.parametrize(
    ("env", "what"),
    [
        ({"AYUDANTIA_CODEC": "yaml"}, "codec"),
        ({"AYUDANTIA_TAREO": "nohostport"}, "tareo"),
        ({"AYUDANTIA_CHUNK_SIZE": "lots"}, "chunk_size"),
    ],
)
def test_bad_values_name_the_setting_and_the_source(env, what):
    with pytest.raises(ConfigError, match=f"{what} from AYUDANTIA_"):
        settings_for(["docencio"], env)


def test_run_options():
    r = settings_for(["run"], {})
    assert (r["students"], r["questions"], r["codec"]) == (3, 20, "json")
    assert r["interval"] < 0.1  # `uv run ayudantia run` must finish quickly
    r = settings_for(
        ["run", "--students", "10", "--codec", "msgpack"], {"AYUDANTIA_QUESTIONS": "5"}
    )
    assert (r["students"], r["questions"], r["codec"]) == (10, 5, "msgpack")
