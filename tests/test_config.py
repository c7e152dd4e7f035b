"""Settings precedence for the class's commands: flag > env > TOML [role] > TOML > default."""

from __future__ import annotations

import re

import pytest

from ayudantia.cli import build_parser
from ayudantia.commands import COMMANDS
from ayudantia.config import ConfigError, resolve, toml_keys


def settings_for(argv: list[str], environ: dict[str, str]) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    return resolve(
        args,
        args._command.options(),
        role=args._command.NAME,
        environ=environ,
        known=toml_keys(COMMANDS),
    )


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
        ({"AYUDANTIA_CODEC": "yaml"}, "AYUDANTIA_CODEC=yaml (environment): unknown codec"),
        ({"AYUDANTIA_TAREO": "nohostport"}, "AYUDANTIA_TAREO=nohostport (environment)"),
        ({"AYUDANTIA_CHUNK_SIZE": "lots"}, "AYUDANTIA_CHUNK_SIZE=lots (environment)"),
    ],
)
def test_bad_values_name_the_setting_and_the_source(env, what):
    with pytest.raises(ConfigError, match=re.escape(what)):
        settings_for(["docencio"], env)


def test_a_flag_error_reads_like_the_environment_error():
    """One code path: the flag and the variable get the same explanation."""
    with pytest.raises(ConfigError) as by_flag:
        settings_for(["docencio", "--chunk-size", "1.5M"], {})
    with pytest.raises(ConfigError) as by_env:
        settings_for(["docencio"], {"AYUDANTIA_CHUNK_SIZE": "1.5M"})
    assert str(by_flag.value).startswith("--chunk-size 1.5M: ")
    assert str(by_flag.value).split(": ", 1)[1] == str(by_env.value).split(": ", 1)[1]


def test_a_command_variable_beats_the_shared_one():
    env = {"AYUDANTIA_PORT": "5000", "AYUDANTIA_DOCENCIO_PORT": "5001"}
    assert settings_for(["docencio"], env)["port"] == 5001
    assert settings_for(["tareo"], env)["port"] == 5000


def test_zero_means_no_limit_for_every_timeout():
    e = settings_for(["estudiante", "--timeout", "0", "--read-timeout", "0"], {})
    assert e["timeout"] is None and e["read_timeout"] is None
    with pytest.raises(ConfigError, match="cannot be unlimited"):
        settings_for(["docencio", "--timeout", "0"], {})  # a per-question deadline must end


def test_misspelt_toml_keys_are_named_with_the_nearest(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("chunk_sise = 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"chunk_sise .* did you mean chunk_size"):
        settings_for(["eco", "--config", str(path)], {})
    path.write_text("[docencio]\nworkers = 4\n", encoding="utf-8")  # a Tareo setting
    with pytest.raises(ConfigError, match=r"workers in \[docencio\] .* not a setting of docencio"):
        settings_for(["eco", "--config", str(path)], {})
    path.write_text("workers = 4\n", encoding="utf-8")  # top level: fine, the Tareo reads it
    assert settings_for(["tareo", "--config", str(path)], {})["workers"] == 4


def test_run_options():
    r = settings_for(["run"], {})
    assert (r["students"], r["questions"], r["codec"]) == (3, 20, "json")
    assert r["interval"] < 0.1  # `uv run ayudantia run` must finish quickly
    r = settings_for(
        ["run", "--students", "10", "--codec", "msgpack"], {"AYUDANTIA_QUESTIONS": "5"}
    )
    assert (r["students"], r["questions"], r["codec"]) == (10, 5, "msgpack")


def test_a_key_is_never_echoed_whatever_its_source(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("key = 12345\n", encoding="utf-8")
    with pytest.raises(ConfigError) as bad:
        settings_for(["eco", "--config", str(path)], {})
    assert "key = ***" in str(bad.value) and "12345" not in str(bad.value)
    with pytest.raises(ConfigError) as bad:
        settings_for(["eco"], {"AYUDANTIA_KEY": ""})
    assert "AYUDANTIA_KEY=*** (environment)" in str(bad.value)
