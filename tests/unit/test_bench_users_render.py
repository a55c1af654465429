"""bench/users_render.py at a small N, so the benchmark cannot rot."""

from __future__ import annotations

import pytest

from bench import users_render


def test_the_bench_renders_every_login(capsys: pytest.CaptureFixture[str]) -> None:
    assert users_render.main(["20"]) == 0
    out = capsys.readouterr().out
    assert "20 logins, OpenMetrics:" in out and "20 logins, text:" in out
    assert len(users_render.logins(20).totals) == 20
