"""The docs stay true to the code: topics, tables, agents, settings, metrics, CLI commands and links."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from prometheus_client.metrics_core import Metric

import streams.names
from streams.cli import app as cli_app
from streams.core.events import parse_message
from streams.metrics import WorkerMetrics
from streams.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "docs/architecture.md"
README = REPO / "README.md"


@pytest.fixture(scope="module")
def architecture() -> str:
    return ARCHITECTURE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from streams.worker import build_worker

    # Building connects to nothing; the memory store keeps the data dir empty.
    return build_worker(Settings(store="memory", data_dir=tmp_path_factory.mktemp("worker")))


def section(text: str, title: str) -> str:
    """Return the body of the ``## title`` section of a markdown text."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section '## {title}'"
    return match.group(1)


def table_row(text: str, first_cell: str) -> str:
    """Return the markdown table row whose first cell is ``first_cell``."""
    for line in text.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return line
    raise AssertionError(f"no table row starting with {first_cell}")


def topic_names() -> list[str]:
    """The string constants assigned in streams/names.py (not the event types it imports)."""
    tree = ast.parse(Path(streams.names.__file__).read_text(encoding="utf-8"))
    return [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]


def exposed_names(metric: Metric) -> list[str]:
    """Name(s) a metric has in the Prometheus text format."""
    if metric.type == "counter":
        return [f"{metric.name}_total"]
    return [metric.name]


def env_vars() -> list[str]:
    fields = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
    # Variables read directly from os.environ (config file, secrets dir) are settings too.
    source = (REPO / "streams/settings.py").read_text(encoding="utf-8")
    direct = re.findall(r"""["'](BURNWATCH_[A-Z_]+)["']""", source)
    return list(dict.fromkeys(fields + direct))


def cli_commands() -> list[str]:
    """Every command as typed: ``burnwatch worker``, ``burnwatch prices show``, ..."""
    root = typer.main.get_command(cli_app)
    found = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found.append(f"burnwatch {name}")
        for sub in getattr(command, "commands", {}):
            found.append(f"burnwatch {name} {sub}")
    return found


def test_the_code_has_what_the_checks_look_for() -> None:
    assert {"usage.gpu", "usage.llm", "usage.storage", "usage.dlq", "costs.priced"} <= set(topic_names())
    assert "BURNWATCH_KAFKA_BOOTSTRAP_SERVERS" in env_vars() and "BURNWATCH_CONFIG" in env_vars()
    assert {"burnwatch worker", "burnwatch prices show"} <= set(cli_commands())


@pytest.mark.parametrize("topic", topic_names())
def test_every_topic_is_in_the_architecture_topics_table(architecture: str, topic: str) -> None:
    table_row(section(architecture, "Topics"), f"`{topic}`")


def test_tables_agents_and_changelogs_are_documented(architecture: str, worker: Any) -> None:
    tables = section(architecture, "Tables")
    topics = section(architecture, "Topics")
    assert list(worker.app.tables), "the worker has no table"
    for name, table in worker.app.tables.items():
        row = table_row(tables, f"`{name}`")
        assert table.changelog_topic.get_topic_name() in architecture
        assert f"`<app_id>-{name}-changelog`" in topics
        for key, value in table.changelog_topic.config.items():
            if key == "cleanup.policy":
                assert f"cleanup.policy={value}" in row
    assert list(worker.app.agents), "the worker has no agent"
    for name in worker.app.agents:
        table_row(section(architecture, "Agents"), f"`{name}`")


@pytest.mark.parametrize("var", env_vars())
def test_every_setting_is_in_the_configuration_table_with_its_default(architecture: str, var: str) -> None:
    row = table_row(section(architecture, "Configuration"), f"`{var}`")
    field = Settings.model_fields.get(var.removeprefix(ENV_PREFIX).lower())
    if field is None:
        return
    default = field.default
    if default is None:
        assert "unset" in row
    elif default == "":
        assert "empty" in row
    else:
        assert f"`{default}`" in row, f"default {default!r} not shown in: {row}"


@pytest.mark.parametrize("name", [n for m in WorkerMetrics().registry.collect() for n in exposed_names(m)])
def test_every_metric_is_in_the_metrics_table_as_exposed(architecture: str, name: str) -> None:
    table_row(section(architecture, "Metrics"), f"`{name}`")


def test_metrics_table_lists_no_metric_the_code_lacks(architecture: str) -> None:
    exposed = {n for m in WorkerMetrics().registry.collect() for n in exposed_names(m)}
    documented = set(re.findall(r"^\| `(burnwatch_[a-z_]+)` \|", section(architecture, "Metrics"), re.M))
    assert documented == exposed


@pytest.mark.parametrize("command", cli_commands())
def test_every_cli_command_is_in_the_readme_and_the_cli_map(
    readme: str, architecture: str, command: str
) -> None:
    # A group's sub-commands may be written after the group: `burnwatch prices show` / `validate FILE`.
    words = command.split()
    group, sub = " ".join(words[:2]), " ".join(words[2:])
    cli_map = section(architecture, "CLI map")
    for doc in (readme, cli_map):
        assert f"`{group}" in doc
        assert not sub or f"`{sub}" in doc or f"{group} {sub}" in doc


def test_readme_quick_start_is_make_demo_and_make_test(readme: str) -> None:
    block = re.search(r"```sh\n(.*?)```", section(readme, "Quick start"), re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_every_make_target_the_docs_name_exists(readme: str, architecture: str) -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set()
    for line in makefile.splitlines():
        match = re.match(r"^([a-z][a-z -]*):", line)
        if match:
            targets.update(match.group(1).split())
    named = set()
    for listed in re.findall(r"\bmake ([a-z-]+(?: \| [a-z-]+)*)", readme + architecture):
        named.update(listed.split(" | "))
    assert named, "the docs name no make target"
    assert named <= targets, f"targets named in the docs but missing from the Makefile: {named - targets}"


def test_readme_event_example_is_a_valid_event(readme: str) -> None:
    blocks = re.findall(r"```json\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        json.loads(block)
        parsed = parse_message(block.encode())
        assert parsed.rejections == [] and len(parsed.events) == 1


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", [README, ARCHITECTURE], ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        assert target.is_file(), f"{doc.name}: broken link {link}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            assert anchor in {slug(h) for h in headings}, f"{doc.name}: no heading for {link}"
