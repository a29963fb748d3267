"""Shared test set-up: the harness trains eagerly except in tests marked ``compile``.

Compiling the training step (``weightdecay.harness.step``) costs seconds per process and
model shape; the tests that check the compiled step are marked ``@pytest.mark.compile``
(``make test-fast`` leaves them out), every other test trains with the eager step, in this
process and in the workers it starts (the switch is an environment variable).
"""

from __future__ import annotations

import pytest

from weightdecay.harness.step import ENV_SWITCH


@pytest.fixture(autouse=True)
def _eager_step_unless_marked_compile(request, monkeypatch):
    if request.node.get_closest_marker("compile") is None:
        monkeypatch.setenv(ENV_SWITCH, "0")
    else:
        monkeypatch.delenv(ENV_SWITCH, raising=False)
