"""``burnwatch prices show | validate | import-litellm`` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.core.catalog import default_catalog, load_catalog
from streams.settings import get_settings
from tests.support.shared_data import SHARED_DATA, needs_shared

SHARED = SHARED_DATA
LITELLM = SHARED / "prices/litellm_model_prices_and_context_window.json"
runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch):
    for name in ("BURNWATCH_CONFIG", "BURNWATCH_CATALOG_PATH"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_show_summarises_the_default_catalog():
    result = runner.invoke(app, ["prices", "show"])
    assert result.exit_code == 0, result.output
    assert f"version {default_catalog().version}" in result.output
    assert "GPU (17 entries)" in result.output
    assert f"LLM tokens ({len(default_catalog().llm)} models)" in result.output
    assert "anthropic" in result.output and "on_prem" in result.output


def test_show_json_is_the_whole_catalog():
    result = runner.invoke(app, ["prices", "show", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["version"] == default_catalog().version
    assert len(doc["llm"]) == len(default_catalog().llm)
    p4d = next(g for g in doc["gpu"] if g.get("instance_type") == "p4d.24xlarge")
    assert p4d["usd_per_gpu_hour"] == pytest.approx(32.7726 / 8)


def test_show_reads_catalog_option_and_catalog_path_setting(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("version: mine-7\nextends: default\ndiscounts:\n  - {provider: aws, pct: 15}\n")
    result = runner.invoke(app, ["prices", "show", "--catalog", str(path)])
    assert result.exit_code == 0, result.output
    assert "mine-7+" in result.output and "Discounts" in result.output
    monkeypatch.setenv("BURNWATCH_CATALOG_PATH", str(path))
    get_settings.cache_clear()
    result = runner.invoke(app, ["prices", "show", "--json"])
    assert json.loads(result.stdout)["version"].startswith("mine-7+")


def test_show_lists_every_model_on_request():
    result = runner.invoke(app, ["prices", "show", "--llm-models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "claude-sonnet-4-5" in result.output


def test_validate_ok_and_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("version: g\nstorage:\n  - {provider: aws, usd_per_gb_month: 0.02}\n")
    result = runner.invoke(app, ["prices", "validate", str(good)])
    assert result.exit_code == 0
    assert f"{good}: ok (version g: 0 gpu, 0 llm, 1 storage" in result.output

    bad = tmp_path / "catalog.yaml"
    rows = "".join(f"  - {{provider: openai, model: m{i}, input_usd_per_token: 0, output_usd_per_token: 0}}\n"
                   for i in range(3))
    bad.write_text("version: b\nllm:\n" + rows +
                   "  - {provider: openai, model: x, input_usd_per_token: -1, output_usd_per_token: 0}\n")
    result = runner.invoke(app, ["prices", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: llm[3].input_usd_per_token: must be >= 0 (got -1)" in result.output


def test_validate_missing_file(tmp_path):
    result = runner.invoke(app, ["prices", "validate", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1
    assert "none.yaml: (top level): cannot read the file" in result.output


@needs_shared(LITELLM)
def test_import_litellm_writes_a_catalog_that_extends_the_default(tmp_path):
    out = tmp_path / "llm.yaml"
    result = runner.invoke(app, ["prices", "import-litellm", str(LITELLM), "--out", str(out),
                                 "--providers", "openai,anthropic"])
    assert result.exit_code == 0, result.output
    assert "llm entries from 4878 LiteLLM keys" in result.output and f"wrote {out}" in result.output
    cat = load_catalog(out)
    assert cat.version.startswith("litellm-") and cat.version.endswith("+" + default_catalog().version)
    imported = {m.provider for m in cat.llm[: len(cat.llm) - len(default_catalog().llm)]}
    assert imported <= {"openai", "anthropic"}
    assert runner.invoke(app, ["prices", "validate", str(out)]).exit_code == 0


def test_import_litellm_to_stdout_and_errors(tmp_path):
    src = tmp_path / "prices.json"
    src.write_text(json.dumps({
        "m1": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-6,
               "output_cost_per_token": 2e-6},
        "e1": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 1e-7},
    }))
    result = runner.invoke(app, ["prices", "import-litellm", str(src), "--version", "v9", "--extends", ""])
    assert result.exit_code == 0
    assert "version: v9" in result.stdout and "extends" not in result.stdout
    assert "model: m1" in result.stdout and "e1" not in result.stdout
    assert "1 llm entries from 2 LiteLLM keys (skipped: mode 1)" in result.stderr

    result = runner.invoke(app, ["prices", "import-litellm", str(src), "--active-on", "tomorrow"])
    assert result.exit_code == 1 and "--active-on: must be a date" in result.output
    result = runner.invoke(app, ["prices", "import-litellm", str(tmp_path / "missing.json")])
    assert result.exit_code == 1 and "missing.json: cannot read the file" in result.output
