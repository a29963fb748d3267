"""Tests of optional integrations: skipped without their packages, except in CI.

``.ci/run`` installs requirements-docs.txt and requirements-integrations.txt and sets
``WEIGHTDECAY_REQUIRE_OPTIONAL=1``; there a missing package fails the test instead of
skipping it, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

REQUIRED = os.environ.get("WEIGHTDECAY_REQUIRE_OPTIONAL") == "1"


def need(*modules: str, install: str) -> None:
    """Skip (or, with WEIGHTDECAY_REQUIRE_OPTIONAL=1, fail) unless every module imports."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed ({install})"
    if REQUIRED:
        pytest.fail(f"WEIGHTDECAY_REQUIRE_OPTIONAL=1 but {message}")
    pytest.skip(message)
