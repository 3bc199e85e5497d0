"""Conventions that keep the codebase in shape (STYLE.md, points 1, 2 and 10)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "generation", "storage", "migrations")


def test_import_contracts_hold():
    """import-linter checks the layer contracts declared in pyproject.toml."""
    proc = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_only_bot_imports_discord():
    for package in ("generation", "storage", "migrations"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text("utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                assert not any(n == "discord" or n.startswith("discord.") for n in names), path


def test_importing_the_packages_does_no_heavy_work():
    code = ("import sys, generation, generation.grammar, generation.request, storage.models, bot.cli, "
            "bot.settings; heavy = [m for m in ('torch', 'diffusers', 'transformers', 'discord') "
            "if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def _catalogue(locale: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for package in ("generation", "bot"):
        for path in sorted((ROOT / package / "locales" / locale).glob("*.json")):
            texts = json.loads(path.read_text("utf-8"))
            assert not set(texts) & set(merged), f"{path}: codes defined twice"
            merged.update(texts)
    return merged


def test_every_raised_code_has_english_and_chinese_text():
    en, zh = _catalogue("en"), _catalogue("zh-CN")
    assert set(en) == set(zh)
    for code in en:
        assert set(re.findall(r"{(\w+)}", en[code])) == set(re.findall(r"{(\w+)}", zh[code])), code
    pattern = re.compile(r"""(?:Error|Note|Cancelled|ImageNotFound)\(\s*["']([a-z_]+\.[a-z_.]+)["']""")
    missing = set()
    for package in ("generation", "bot"):
        for path in (ROOT / package).rglob("*.py"):
            for code in pattern.findall(path.read_text("utf-8")):
                if code not in en:
                    missing.add((code, path.name))
    assert not missing, sorted(missing)
