"""Parameters of every type on the command line: enums, literals, dates, paths, containers as
JSON or repeated options, dataclasses and pydantic models checked field by field; bad values are
one-line usage errors (exit 2) naming the parameter and the field; ``--help`` shows plain type
names, defaults and the docstring's descriptions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_paths import WORKFLOWS

FLOW = WORKFLOWS / "typed_params_flow.py"
CONFIG = '{"optimizer": {"lr": 0.5}, "layers": [2, 3]}'


def received(result) -> dict:
    """The workflow's echo of what it received, from ``run --json``."""
    assert result.code == 0, result.err
    return json.loads(json.loads(result.out)["result"])


def run_typed(cli, *args: str):
    return cli("run", FLOW, "typed", "--json", "--color", "RED", "--config", CONFIG, *args)


def test_every_type_arrives_as_its_hint_says(cli):
    got = received(
        run_typed(
            cli,
            "--level",
            "2",
            "--mode",
            "exact",
            "--when",
            "2026-12-02T10:30:00+00:00",
            "--day",
            "2026-03-04",
            "--out",
            "runs/a.txt",
            "--tags",
            "x",
            "--tags",
            "y",
            "--shape",
            "[3, 4]",
            "--weights",
            "a=1",
            "--weights",
            "b=2.5",
            "--limit",
            "7",
        )
    )
    assert got == {
        "color": "Color.RED",
        "config": {
            "Config": {
                "dropout": None,
                "layers": ["list", [2, 3]],
                "optimizer": {"Optimizer": {"lr": 0.5, "name": "adam"}},
            }
        },
        "level": "Level.HIGH",
        "mode": "exact",
        "when": "datetime(2026-12-02 10:30:00+00:00)",
        "day": "date(2026-03-04)",
        "out": "PosixPath(runs/a.txt)",
        "tags": ["list", ["x", "y"]],
        "shape": ["tuple", [3, 4]],
        "weights": {"a": 1.0, "b": 2.5},
        "limit": 7,
    }


def test_defaults_apply_when_options_are_not_given(cli):
    got = received(run_typed(cli))
    assert got["level"] == "Level.LOW" and got["mode"] == "fast"
    assert got["day"] == "date(2026-01-01)" and got["shape"] == ["tuple", [1, 1]]
    assert got["tags"] is None and got["weights"] is None and got["when"] is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--color", "green"], ("color", "Color.GREEN")),  # enum by name, any case
        (["--level", "HIGH"], ("level", "Level.HIGH")),  # by name ...
        (["--level", "1"], ("level", "Level.LOW")),  # ... or by value
        (["--tags", '["p", "q"]'], ("tags", ["list", ["p", "q"]])),  # a list as JSON
        (["--shape", "5", "--shape", "6"], ("shape", ["tuple", [5, 6]])),  # a tuple repeated
        (["--weights", '{"w": 3}'], ("weights", {"w": 3.0})),  # a dict as JSON
        (["--limit", "null"], ("limit", None)),  # Optional: null is None
        (["--when", "2026-05-06"], ("when", "datetime(2026-05-06 00:00:00)")),  # midnight
    ],
)
def test_each_way_of_giving_a_value(cli, args, expected):
    name, value = expected
    assert received(run_typed(cli, *args))[name] == value


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--config", CONFIG.replace("0.5", '"fast"')], ["--config", "optimizer.lr", "float"]),
        (["--config", CONFIG.replace("0.5", '1, "mu": 2')], ["optimizer.mu", "unknown"]),
        (["--config", '{"layers": [1]}'], ["--config", "'optimizer'", "missing"]),
        (["--config", CONFIG.replace("3]", '"two"]')], ["--config", "layers[1]", "expects int"]),
        (["--config", "[1, 2]"], ["--config", "Config", "JSON object"]),
        (["--config", "{oops"], ["--config", "JSON"]),
        (["--color", "blue"], ["--color", "RED, GREEN"]),
        (["--level", "3"], ["--level", "LOW, HIGH"]),
        (["--mode", "slow"], ["--mode", "'fast', 'exact'"]),
        (["--when", "yesterday"], ["--when", "ISO 8601"]),
        (["--day", "2026-05-06T07:00:00"], ["--day", "ISO 8601 date"]),  # never drop a time
        (["--shape", "1"], ["--shape", "2 items"]),
        (["--shape", "1", "--shape", "x"], ["--shape", "[1]", "expects int"]),
        (["--weights", "a"], ["--weights", "KEY=VALUE"]),
        (["--weights", "a=heavy"], ["--weights", "'a'", "expects float"]),
        (["--limit", "many"], ["--limit", "expects int"]),
    ],
)  # fmt: skip
def test_a_bad_value_is_a_one_line_usage_error_naming_parameter_and_field(cli, args, words):
    base = ["--color", "RED", "--config", CONFIG]
    r = cli("run", FLOW, "typed", *base, *args)
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taskpoint: error: "), r.err
    assert "internal error" not in r.err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_help_shows_plain_types_defaults_and_descriptions(cli):
    r = cli("run", FLOW, "typed", "--help")
    assert r.code == 0, r.err
    text = " ".join(r.out.split())  # click wraps the help column
    for expected in (
        "Echo typed parameters.",
        "--color [RED|GREEN] Colour of the run. [required]",
        "--config Config Model configuration, as a JSON object.",
        "--level [LOW|HIGH] How hard to try. [default: LOW]",
        "--mode [fast|exact] Either fast or exact; exact takes longer. [default: fast]",
        "--day date (ISO 8601) [default: 2026-01-01]",
        "--out Path [default: out.txt]",
        "--tags list[str] (repeat the option, or give one JSON array)",
        "--shape tuple[int, int]",
        "[default: [1, 1]]",
        "--weights dict[str, float] (repeat as KEY=VALUE, or give one JSON object)",
        "--limit int",
    ):
        assert expected in text, expected
    assert "typed_params_flow" not in text.split("Options:")[1]  # no module-mangled names
    assert "Returns" not in text and "A JSON text" not in text  # only the summary


def test_help_reads_numpydoc_parameters(cli):
    r = cli("run", FLOW, "numpy_documented", "--help")
    text = " ".join(r.out.split())
    assert "Scale alpha." in text
    assert "--alpha float The value to scale. [required]" in text
    assert "--beta int The factor. [default: 3]" in text


def test_pydantic_model_fields_are_checked(cli):
    pytest.importorskip("pydantic")
    flow = WORKFLOWS / "pydantic_params_flow.py"
    r = cli("run", flow, "scheduled", "--schedule", '{"epochs": 3, "warmup": 0.5}')
    assert r.code == 0, r.err
    assert "3|0.5" in r.out
    r = cli("run", flow, "scheduled", "--schedule", '{"epochs": "many"}')
    assert r.code == 2 and "--schedule" in r.err and "epochs" in r.err, r.err


def test_the_real_command_exits_2_with_one_line(tmp_path):
    """Through the installed entry point's module, as a user types it."""
    proc = subprocess.run(
        [sys.executable, "-m", "taskpoint.cli", "--home", str(tmp_path), "run", str(FLOW),
         "typed", "--color", "RED", "--config", '{"optimizer": {"lr": []}, "layers": []}'],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "'optimizer.lr'" in proc.stderr and "--config" in proc.stderr
