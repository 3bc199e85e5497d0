"""storage/ and migrations/ stand alone: no Discord, no torch, none of our other packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_storage_pulls_in_no_models_no_discord_and_no_other_package():
    code = (
        "import sys\n"
        "import storage.archive, storage.db, storage.files, storage.migrate, storage.models\n"
        "import storage.records, storage.repositories, storage.unit_of_work\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    {'torch', 'diffusers', 'transformers', 'peft', 'discord', 'aiohttp', 'generation', 'bot'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""
