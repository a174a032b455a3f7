"""Configuration goes through one place: only ``resources/`` (and the CLI entry point) read the
environment, and every variable any code reads is in the README's table."""

from __future__ import annotations

import re
from pathlib import Path

from resources.settings import SETTINGS, settings_table

ROOT = Path(__file__).resolve().parents[2]
#: Modules allowed to read the environment, and why (documented exceptions).
ENV_READERS = {
    "resources/settings.py": "the configuration layer",
    "resources/vllm.py": "the API key, by the name the resource holds, when the annotator is built",
    "seke/cli.py": "the command line's own defaults (--lake, --db, the weights folder)",
    "expectations/gx_runner.py": "turns GX analytics off (setdefault), reads nothing",
}
READ = re.compile(r"""(?:os\.environ(?:\.get)?\s*[\[(]\s*|os\.getenv\(\s*|EnvVar(?:\.int)?\(\s*|"""
                  r"""\b(?:raw|env_str|env_int|env_parsed)\(\s*|setenv\(\s*|delenv\(\s*)["']([A-Z][A-Z0-9_]+)["']""")


def _code_files() -> list[Path]:
    out = []
    for pkg in ("seke", "assets", "resources", "pipelines", "expectations", "tests", "bench"):
        out += [p for p in (ROOT / pkg).rglob("*.py")]
    return out


def test_only_resources_and_the_cli_read_the_environment():
    bad = []
    for path in _code_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("tests/", "bench/")) or rel in ENV_READERS:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"os\.environ|os\.getenv|getenv\(", text):
            bad.append(rel)
    assert not bad, f"these modules read the environment (move it to resources/settings.py): {bad}"


def test_every_variable_read_anywhere_is_documented():
    documented = {s.name for s in SETTINGS}
    read = {}
    for path in _code_files():
        for name in READ.findall(path.read_text(encoding="utf-8")):
            if name.startswith(("SEKE_", "AWS_", "OPENAI_", "DAGSTER_HOME")):
                read.setdefault(name, path.relative_to(ROOT).as_posix())
    missing = {n: where for n, where in read.items() if n not in documented}
    assert not missing, f"variables read but missing from resources.settings.SETTINGS / README: {missing}"
    assert {"SEKE_LAKE_URI", "SEKE_VLLM_TEMPERATURE", "SEKE_SHARED_DATA"} <= set(read)  # the scan works


def test_readme_table_is_the_settings_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme, "README's configuration table differs: paste resources.settings.settings_table()"
