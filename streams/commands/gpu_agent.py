"""``burnwatch gpu-agent``: sample this node's GPUs every interval and publish ``gpu.sample`` events."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from streams.commands.common import CONFIG_OPTION, err_console, load_settings, setup_logging
from streams.settings import describe_error

log = logging.getLogger("burnwatch.gpu_agent")


def register(app: typer.Typer) -> None:
    """Add the ``gpu-agent`` command."""

    @app.command("gpu-agent")
    def gpu_agent(
        source: str | None = typer.Option(
            None, help="dcgm, nvidia_smi or nvml (default: BURNWATCH_GPU_AGENT_SOURCE or dcgm)."
        ),
        interval: int | None = typer.Option(
            None, "--interval", min=1, help="Seconds per sample (default 15)."
        ),
        once: bool = typer.Option(False, "--once", help="Print one sample as JSON and exit; send nothing."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Read GPU usage (DCGM exporter, nvidia-smi or NVML) and publish one gpu.sample per interval.

        Samples are buffered on local disk until Kafka acknowledges them, so an outage loses nothing
        until the buffer is full (then the oldest are dropped and counted).
        """
        from streams.gpu_agent.agent import GpuAgent, facts_from, read_sample, utc_now
        from streams.gpu_agent.sample import grid_tick
        from streams.gpu_agent.settings import GpuAgentSettings
        from streams.gpu_agent.sources import SourceError, build_source

        overrides: dict[str, Any] = {}
        if source is not None:
            overrides["source"] = source
        if interval is not None:
            overrides["interval_s"] = interval
        try:
            agent_settings = GpuAgentSettings(**overrides)
        except ValidationError as error:
            err_console.print(describe_error(error, "BURNWATCH_GPU_AGENT_* env or options"), style="red",
                              markup=False, highlight=False)
            raise typer.Exit(2) from None

        if once:
            try:
                tick = grid_tick(utc_now(), agent_settings.interval_s)
                doc = read_sample(build_source(agent_settings), facts_from(agent_settings), tick,
                                  agent_settings.interval_s)
            except SourceError as error:
                err_console.print(f"gpu-agent: {error}", style="red", markup=False, highlight=False)
                raise typer.Exit(1) from None
            typer.echo(json.dumps(doc, indent=2))
            return

        settings = load_settings(config)
        setup_logging(settings.log_level)
        try:
            agent = GpuAgent(agent_settings, settings)
        except SourceError as error:
            err_console.print(f"gpu-agent: {error}", style="red", markup=False, highlight=False)
            raise typer.Exit(2) from None
        server = _serve_metrics(agent_settings.metrics_host, agent_settings.metrics_port, agent)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: agent.stop())
        facts = agent.facts
        log.info(
            "gpu-agent on node %s (cluster %s, %s/%s/%s, %s): source %s every %ds, buffer %s (%d pending)",
            facts.node, facts.cluster, facts.provider, facts.region, facts.instance_type or "-",
            facts.pricing,
            agent.source.name, agent_settings.interval_s, agent_settings.buffer_dir, agent.queue.pending,
        )
        try:
            agent.run()
        finally:
            if server is not None:
                server.shutdown()
        log.info("gpu-agent stopped; %d sample(s) left in the buffer", agent.queue.pending)


def _serve_metrics(host: str, port: int, agent: Any) -> Any:
    if not port:
        return None
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=agent.metrics.registry)
    return server
