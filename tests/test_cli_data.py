"""The `tkre` console script: data commands, help on every command, one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

FIX = Path(__file__).parent / "fixtures"


def tkre(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "tkre.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"tkre {args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def test_stats_semeval():
    out = tkre("data", "stats", "semeval").stdout
    assert "6,507" in out and "1,493" in out and "2,717" in out and "19 relations" in out


def test_kshot_twice_byte_identical(tmp_path):
    for name in ("a", "b"):
        r = tkre("data", "kshot", "semeval", "--k", 8, "--seed", 1, "--out", tmp_path / f"{name}.jsonl")
        assert "144 training examples" in r.stdout
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_validate_and_errors_are_one_line():
    assert "ok: tacred" in tkre("data", "validate", "tacred", "--path", FIX / "tacred").stdout
    r = tkre("data", "validate", "tacrev", "--path", FIX / "tacred", check=False)
    assert r.returncode == 1
    assert "dev_patch.json" in r.stderr and "Traceback" not in r.stderr
    r = tkre("data", "kshot", "semeval", "--k", 0, "--out", "/tmp/never.jsonl", check=False)
    assert r.returncode == 1 and "K must be a positive" in r.stderr and not Path("/tmp/never.jsonl").exists()



def test_stats_on_tacred_format_data_with_its_own_16_labels():
    r = tkre("data", "stats", "tacred", "--path", FIX / "tacred_own16")
    assert "16 relations (no-relation class: no_relation, left out of micro-F1)" in r.stdout
    assert "per:identity" in r.stdout and "org:city_of_branch" in r.stdout
    said = [line for line in (r.stdout + r.stderr).splitlines() if "own label set" in line]
    assert len(said) == 1 and "16 relations" in said[0], r.stderr
    # real TACRED labels: the 42-label set, and nothing said about it
    r = tkre("data", "stats", "tacred", "--path", FIX / "tacred")
    assert "42 relations" in r.stdout and "own label set" not in r.stdout + r.stderr


def test_stats_without_no_relation_class_and_with_a_test_only_label():
    r = tkre("data", "stats", "tacred", "--path", FIX / "tacred_nonull")
    assert "4 relations (no no-relation class: micro-F1 over all relations)" in r.stdout, r.stdout
    assert "1 label(s) only dev/test carry (1 examples" in r.stdout and "sibling_of (dev/test only)" in r.stdout
    said = [line for line in (r.stdout + r.stderr).splitlines() if "only dev/test carry, with no train" in line]
    assert len(said) == 1 and "sibling_of (1)" in said[0], r.stderr
    r = tkre("data", "stats", "jsonl", "--path", FIX / "jsonl_untyped")
    assert "no-relation class: no_relation, left out of micro-F1" in r.stdout and "twin_of" in r.stdout


def test_validate_refuses_a_token_string_and_an_integer_type(tmp_path):
    import json
    import shutil
    for field, value in (("token", "Maria Lopez was born in Valencia in 1970 ."), ("subj_type", 3)):
        d = tmp_path / field
        shutil.copytree(FIX / "tacred", d)
        data = json.loads((d / "train.json").read_text())
        data[0][field] = value
        (d / "train.json").write_text(json.dumps(data))
        r = tkre("data", "validate", "tacred", "--path", d, check=False)
        assert r.returncode == 1 and "ok:" not in r.stdout, r.stdout
        assert "train.json" in r.stderr and "fx-tr-01" in r.stderr and f"'{field}'" in r.stderr
        assert "Traceback" not in r.stderr and "Arrow" not in r.stderr
        out = tmp_path / f"{field}.jsonl"
        r = tkre("data", "kshot", "tacred", "--path", d, "--k", 1, "--out", out, check=False)
        assert r.returncode == 1 and not out.exists()


def _commands():
    from typer.main import get_command

    from tkre.cli import app
    root = get_command(app)
    out = []

    def walk(cmd, path):
        out.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + [name])
    walk(root, [])
    return out


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "tkre")
def test_help_on_every_command(path):
    from typer.testing import CliRunner

    from tkre.cli import app
    from typer.main import get_command
    cmd = get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    assert (cmd.help or "").strip(), f"tkre {' '.join(path)} has no help text"
    r = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output and cmd.help.strip().split()[0] in r.output


def test_exit_codes_are_true():
    """A command ending in typer.Exit(3) makes the process exit 3 (standalone_mode=False returns the
    code instead of raising it); --version and --help still exit 0."""
    code = ("import typer, tkre.cli as c\n"
            "@c.app.command('fail-on-purpose')\n"
            "def _fail() -> None:\n"
            "    raise typer.Exit(3)\n"
            "c.run_app()\n")
    r = subprocess.run([sys.executable, "-c", code, "fail-on-purpose"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert tkre("--version").returncode == 0 and "tkre" in tkre("--version").stdout
    assert tkre("data", "--help").returncode == 0


def test_enumerated_options_are_choices_with_a_usage_error_not_a_traceback(tmp_path):
    r = tkre("finetune", "--protocol", "fewrel", "--out", tmp_path, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'knowprompt', 'genpt'" in r.stderr
    r = tkre("generate", "synthetic", "--backend", "llamacpp", "--out", tmp_path, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "'hf', 'vllm', 'openai'" in r.stderr
    r = tkre("finetune", "--no-such-option", "--out", tmp_path, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "No such option" in r.stderr


@pytest.mark.parametrize("content", [b"PAR1 truncated", b"", b"not parquet at all\n"])
def test_report_on_a_corrupt_results_file_is_one_line_naming_it(tmp_path, content):
    (tmp_path / "results.parquet").write_bytes(content)
    r = tkre("report", tmp_path, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [s for s in r.stderr.splitlines() if s.strip()]
    assert len(lines) == 1 and "results.parquet" in lines[0] and "not a readable results table" in lines[0]


def test_report_on_a_foreign_parquet_file_names_it(tmp_path):
    import pandas as pd

    pd.DataFrame({"a": [1], "b": ["x"]}).to_parquet(tmp_path / "results.parquet")
    r = tkre("report", tmp_path, check=False)
    assert r.returncode == 1 and "not a tkre results table" in r.stderr and "results.parquet" in r.stderr
