"""MkDocs hook: replace ``<!-- generated: NAME [ARG] -->`` in a page with text made at build time.

Reference facts are read from the code (the click app, the configuration and exit-code
constants, the records schema, the manifest's limits) and results from the suites' JSON output
in ``docs/data/``, so the pages cannot drift from what they describe. An unknown name, or a
generator that fails, stops the build with an error naming the page: a placeholder never ends
up on the site as an empty spot.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docgen_cli import cli_reference
from docgen_facts import (
    config_keys,
    environment_variables,
    exit_codes,
    manifest_constants,
    records_schema,
    records_statuses,
)
from docgen_results import (
    benchmark_machine,
    benchmark_table,
    fault_counts,
    fault_totals,
    rows_table,
)
from mkdocs.exceptions import PluginError

# One comment on its own line; ARG is optional (e.g. the test module whose counts to show).
PLACEHOLDER = re.compile(r"<!--\s*generated:\s*([a-z][a-z0-9-]*)(?:\s+([^\s>]+))?\s*-->")

DATA = Path(__file__).resolve().parent.parent / "data"


def _data_file(name: str | None) -> Path:
    """A results file in docs/data/, named by the placeholder (a plain file name only)."""
    if not name or not re.fullmatch(r"[\w.-]+\.json", name):
        raise PluginError(f"expected the name of a .json file in docs/data/, got {name!r}")
    return DATA / name


def _generators() -> dict[str, Callable[[str | None], str]]:
    bench = DATA / "benchmarks.json"
    faults = DATA / "faults.json"
    return {
        "cli": lambda arg: cli_reference(),
        "config-keys": lambda arg: config_keys(),
        "environment": lambda arg: environment_variables(),
        "exit-codes": lambda arg: exit_codes(),
        "manifest-constants": lambda arg: manifest_constants(),
        "records-schema": lambda arg: records_schema(),
        "records-statuses": lambda arg: records_statuses(),
        # ARG: a results file of docs/data/ other than benchmarks.json (a run of some sections
        # on its own), or, for the table, one target number of benchmarks.json.
        "benchmark-machine": lambda arg: benchmark_machine(_data_file(arg) if arg else bench),
        "benchmark-table": lambda arg: (
            benchmark_table(_data_file(arg))
            if arg and arg.endswith(".json")
            else benchmark_table(bench, arg)
        ),
        "result-rows": lambda arg: rows_table(_data_file(arg)),
        "fault-counts": lambda arg: fault_counts(faults, arg),
        "fault-totals": lambda arg: fault_totals(faults),
    }


def expand(markdown: str, where: str = "a page") -> str:
    """``markdown`` with every placeholder replaced; `PluginError` for an unknown or failing one."""
    generators = _generators()

    def replace(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        generator = generators.get(name)
        if generator is None:
            known = ", ".join(sorted(generators))
            raise PluginError(f"{where}: unknown placeholder 'generated: {name}' (known: {known})")
        try:
            return generator(arg)
        except PluginError:
            raise
        except Exception as exc:  # a build error that names the page beats a traceback
            raise PluginError(f"{where}: 'generated: {name}' failed: {exc}") from exc

    return PLACEHOLDER.sub(replace, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown, where=page.file.src_uri)
