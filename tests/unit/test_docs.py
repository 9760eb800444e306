"""The documented lifecycle table is the one the code enforces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dispatch.lifecycle import render_markdown

pytestmark = pytest.mark.unit


def test_docs_show_the_lifecycle_table_the_code_uses() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    shown = re.search(r"<!-- lifecycle-table -->\n(.*?)\n<!-- /lifecycle-table -->", doc, re.S)
    assert shown is not None
    assert shown.group(1) == render_markdown()
