"""The one error type of dataset validation: :class:`DatasetError`, a :class:`BrushworkError`.

Every refusal has its own code in ``generation/locales/*/datasets.json`` and names the
file or archive member it is about (``name``), so a user who uploaded fifty images knows
which one to fix.
"""

from __future__ import annotations

from generation.errors import BrushworkError


class DatasetError(BrushworkError, ValueError):
    """An uploaded image, caption or archive was refused (the message says which and why)."""

    code = "dataset.invalid"
