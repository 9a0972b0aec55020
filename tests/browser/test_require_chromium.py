"""Without Chromium the browser tests skip and say why; under .ci/run (PQX_REQUIRE_BROWSER=1) they fail."""
import pytest

import conftest


def test_missing_chromium_skips_with_the_reason_or_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("PQX_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium not found at .*apt-get install chromium"):
        conftest.require_chromium()
    monkeypatch.setenv("PQX_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="Chromium not found"):
        conftest.require_chromium()
