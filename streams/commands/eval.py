"""``burnwatch eval``: run the detectors offline over labeled data and report per-detector metrics.

Suites: ``simulator`` (the simulator's incidents at several seeds and intensities, plus a dropped
node for telemetry gaps, and incident-free traffic for the false-alarm rate), ``traces`` (the real
Azure LLM traces cut into sessions, with injected 5x runaway segments), ``nab`` (NAB series with
labeled windows, through the spike scorer). ``burnwatch eval nab DIR`` writes NAB results CSVs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from detectors.config import DetectorConfig
from detectors.eval import DAY_S, Evaluation, KindReport, Window, evaluate, merge_reports
from detectors.findings import (
    AGENT_LOOP,
    CONTEXT_BLOAT,
    EGRESS_SPIKE,
    FINDING_KINDS,
    GPU_UNDERUSED,
    IDLE_GPU,
    MODEL_SWITCH,
    SPEND_SPIKE,
    TELEMETRY_GAP,
    TOKEN_RUNAWAY,
    Finding,
)
from detectors.nab import evaluate_nab, write_nab_results
from detectors.runner import DetectorRunner
from streams.core import simulation as sim
from streams.core.catalog import default_catalog
from streams.core.events import EVENT_ADAPTER
from streams.core.pricing import Pricer

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SEEDS = (7, 11, 23)
INTENSITIES = (0.5, 1.0, 2.0)
START = datetime(2026, 3, 2, tzinfo=UTC)
GAP_AT, GAP_FOR = 0.70, 0.08
console = Console()


@dataclass
class ScenarioRun:
    """What one scenario produced: the evaluation, entity-days per kind, and extra delay units."""

    name: str
    evaluation: Evaluation
    events: int = 0
    loop_requests_to_detect: list[int] = field(default_factory=list)
    long_lived_entity_days: float = 0.0
    bystander_alarms: list[str] = field(default_factory=list)


def _long_lived_days(runner: DetectorRunner, span_s: float) -> float:
    """GPUs, apps, users and spend/egress series (sessions are short-lived and left out)."""
    runaway = runner.entities.get("runaway", set())
    count = len(runner.entities.get("idle_gpu", ())) + len(runner.entities.get("spikes", ()))
    count += sum(1 for key in runaway if "session=" not in key)
    return count * span_s / DAY_S


def _family_days(runner: DetectorRunner, span_s: float) -> dict[str, float]:
    days = span_s / DAY_S
    n = {name: len(keys) for name, keys in runner.entities.items()}
    sessions = sum(1 for k in runner.entities.get("runaway", ()) if "session=" in k)
    long_lived = len(runner.entities.get("runaway", ())) - sessions
    gpus, scopes = n.get("idle_gpu", 0), n.get("spikes", 0)
    return {
        IDLE_GPU: gpus * days,
        GPU_UNDERUSED: gpus * days,
        TELEMETRY_GAP: gpus * days,
        TOKEN_RUNAWAY: (long_lived + sessions) * days,
        AGENT_LOOP: sessions * days,
        CONTEXT_BLOAT: sessions * days,
        MODEL_SWITCH: n.get("model_switch", 0) * days,
        SPEND_SPIKE: scopes * days,
        EGRESS_SPIKE: scopes * days,
    }


def _feed(runner: DetectorRunner, pricer: Pricer, event: dict[str, Any]) -> None:
    parsed = EVENT_ADAPTER.validate_python(event)
    hashes = {event["event_id"]: event["prompt_hash"]} if event.get("prompt_hash") else None
    runner.feed(pricer.price(parsed), node=event.get("node"), prompt_hashes=hashes)


# --- the simulator suite ----------------------------------------------------------------------------


def scenario(
    seed: int, intensity: float, *, duration_s: float, nodes: int, rate: float, incidents: bool = True
) -> sim.Simulation:
    """Return the simulator scenario of one run: every incident kind at ``intensity`` (or none)."""
    specs = (
        tuple(
            sim.IncidentSpec(s.kind, s.offset_s, s.duration_s, intensity)
            for s in sim.default_incidents(duration_s)
        )
        if incidents
        else ()
    )
    return sim.Simulation(
        sim.SimulationConfig(
            start=START + timedelta(days=seed),
            duration_s=duration_s,
            seed=seed,
            nodes=nodes,
            rate=rate,
            incidents=specs,
        )
    )


def simulator_run(
    seed: int,
    intensity: float,
    *,
    duration_s: float = 3600.0,
    nodes: int = 6,
    rate: float = 10.0,
    incidents: bool = True,
    config: DetectorConfig | None = None,
) -> ScenarioRun:
    """Simulate one run with every incident kind at ``intensity`` (or none) and score the detectors."""
    simulation = scenario(seed, intensity, duration_s=duration_s, nodes=nodes, rate=rate, incidents=incidents)
    truth = simulation.truth
    node_team = {n.name: n.labels.get("team", "") for n in simulation.nodes}
    bucket_team = {b.name: b.team for b in simulation.buckets}
    app_team = {a.name: a.team for a in sim.APPS}
    app_project = {a.name: a.project for a in sim.APPS}
    t0 = simulation.start.timestamp()
    windows: list[Window] = []
    busy = {i.entity for i in truth}
    gap_node = next((n.name for n in simulation.nodes if n.name not in busy), None) if incidents else None
    gap = (t0 + GAP_AT * duration_s, t0 + (GAP_AT + GAP_FOR) * duration_s)
    if gap_node:
        windows.append(
            Window(
                TELEMETRY_GAP,
                gap_node,
                *gap,
                explains=(SPEND_SPIKE,),
                related=frozenset({node_team[gap_node]}),
                label="dropped node",
            )
        )
    loop_times: dict[str, list[float]] = {}
    for inc in truth:
        start, end = inc.start.timestamp(), inc.end.timestamp()
        if inc.kind == sim.IDLE_GPU:
            windows.append(
                Window(
                    IDLE_GPU,
                    inc.entity,
                    start,
                    end,
                    explains=(GPU_UNDERUSED,),
                    grace_s=120.0,
                    label=f"idle x{intensity}",
                )
            )
        elif inc.kind == sim.RUNAWAY_LOOP:
            d = inc.detail
            related = frozenset({d["app"], d["user"], app_team[d["app"]], app_project[d["app"]], d["model"]})
            kinds = (AGENT_LOOP, TOKEN_RUNAWAY, CONTEXT_BLOAT)
            for kind in kinds:
                windows.append(
                    Window(
                        kind,
                        inc.entity,
                        start,
                        end,
                        explains=(*kinds, SPEND_SPIKE),
                        related=related,
                        exclusive=("session", "user"),
                        label=f"loop x{intensity}",
                    )
                )
            loop_times[inc.entity] = []
        elif inc.kind == sim.EGRESS_SPIKE:
            windows.append(
                Window(
                    EGRESS_SPIKE,
                    inc.entity,
                    start,
                    end,
                    explains=(SPEND_SPIKE,),
                    related=frozenset({bucket_team[inc.entity]}),
                    label=f"egress x{intensity}",
                )
            )
        elif inc.kind == sim.MODEL_SWITCH:
            d = inc.detail
            windows.append(
                Window(
                    MODEL_SWITCH,
                    inc.entity,
                    start,
                    end,
                    explains=(TOKEN_RUNAWAY, SPEND_SPIKE),
                    related=frozenset({app_team[inc.entity], app_project[inc.entity], d["to_model"]}),
                    label=f"switch x{intensity}",
                )
            )
        elif inc.kind == sim.UNTAGGED:
            windows.append(
                Window(
                    "untagged",
                    inc.entity,
                    start,
                    end,
                    explains=(SPEND_SPIKE,),
                    related=frozenset({node_team[inc.entity], "unallocated"}),
                    label="untagged",
                )
            )
    runner = DetectorRunner(config)
    pricer = Pricer(default_catalog())
    count = 0
    for event in simulation.events():
        if gap_node and event.get("node") == gap_node:
            moment = datetime.fromisoformat(event["time"]).timestamp()
            if gap[0] <= moment < gap[1]:
                continue
        session = event.get("session")
        if session in loop_times:
            loop_times[session].append(datetime.fromisoformat(event["time"]).timestamp())
        _feed(runner, pricer, event)
        count += 1
    runner.finish()
    evaluation = evaluate(runner.findings, windows, _family_days(runner, duration_s))
    evaluation.reports.pop("untagged", None)
    to_detect = []
    for window, found in evaluation.matches:
        if window.kind == AGENT_LOOP and found is not None:
            t = found.detected_at.timestamp()
            to_detect.append(sum(1 for x in loop_times[window.entity] if x < t))
    name = f"sim seed={seed} x{intensity}" if incidents else f"sim seed={seed} incident-free"
    return ScenarioRun(name, evaluation, count, to_detect, _long_lived_days(runner, duration_s))


# --- the LLM traces suite ---------------------------------------------------------------------------


def _read_trace(path: Path) -> list[tuple[float, int, int]]:
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            moment = datetime.fromisoformat(row["TIMESTAMP"][:26]).replace(tzinfo=UTC).timestamp()
            rows.append((moment, int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    return rows


def traces_run(
    path: Path,
    seed: int,
    *,
    span_s: float = 3600.0,
    per_session_per_min: float = 8.0,
    injections: int = 3,
    factor: float = 5.0,
    config: DetectorConfig | None = None,
) -> ScenarioRun:
    """Cut a real trace into steady sessions, inject ``factor``-times-faster segments, and score runaway."""
    rows = _read_trace(path)
    t_first = rows[0][0]
    rows = [r for r in rows if r[0] - t_first < span_s]
    app = f"trace-{path.stem.rsplit('_', 1)[-1]}"
    rng = random.Random(seed)
    # steady sessions of about ``per_session_per_min`` requests a minute: an active agent's pace
    sessions = max(2, round(len(rows) / max(rows[-1][0] - t_first, 1.0) * 60.0 / per_session_per_min))
    owner = [f"{app}-s{rng.randrange(sessions):03d}" for _ in rows]
    requests: list[tuple[float, str, int, int, str]] = [
        (r[0], owner[i], r[1], r[2], f"p{i}") for i, r in enumerate(rows)
    ]
    span = rows[-1][0] - t_first
    windows: list[Window] = []
    targets = rng.sample(sorted(set(owner)), injections)
    for k, target in enumerate(targets):
        onset = t_first + span * (0.4 + 0.4 * k / max(1, injections))
        own = [r for r in requests if r[1] == target and r[0] < onset]
        base_rate = len(own) / max(onset - t_first, 1.0)
        t, end = onset, onset + 300.0
        while True:
            t += rng.expovariate(base_rate * (factor - 1.0))
            if t >= end:
                break
            size = rows[rng.randrange(len(rows))]
            requests.append((t, target, size[1], size[2], f"x{k}-{t:.3f}"))
        windows.append(
            Window(
                TOKEN_RUNAWAY,
                target,
                onset,
                end,
                explains=(TOKEN_RUNAWAY, SPEND_SPIKE),
                related=frozenset({app, _user(target), "gpt-4o", "traces"}),
                exclusive=("session", "user"),
                label=f"{factor:g}x own",
            )
        )
    requests.sort()
    runner = DetectorRunner(config)
    pricer = Pricer(default_catalog())
    for i, (moment, session, context, generated, prompt) in enumerate(requests):
        _feed(
            runner,
            pricer,
            {
                "type": "llm.request",
                "event_id": f"trace-{seed}-{i}",
                "time": datetime.fromtimestamp(moment, tz=UTC).isoformat(),
                "provider": "openai",
                "model": "gpt-4o",
                "input_tokens": context,
                "output_tokens": generated,
                "app": app,
                "user": _user(session),
                "session": session,
                "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                "labels": {"team": "traces"},
            },
        )
    runner.finish()
    evaluation = evaluate(runner.findings, windows, _family_days(runner, span))
    # a session or user alarm naming neither an injected session nor its user: a false alarm in the
    # metrics (no window explains it), listed by name here
    named = {w.entity for w in windows} | {_user(w.entity) for w in windows}
    bystanders = [
        f"{found.entity.get('session') or found.entity['user']} "
        f"at {found.detected_at.timestamp() - t_first:.0f} s"
        for found in runner.findings
        if found.kind == TOKEN_RUNAWAY
        and found.state == "open"
        and ("session" in found.entity or "user" in found.entity)
        and not named & set(found.entity.values())
    ]
    return ScenarioRun(f"traces {app} seed={seed}", evaluation, len(requests), bystander_alarms=bystanders)


def _user(session: str) -> str:
    return session.rsplit("-s", 1)[0] + f"-u{int(session.rsplit('-s', 1)[1]) // 2:03d}"


# --- suites -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteSize:
    """How big a suite run is: ``full`` for the report, ``quick`` for the unit test."""

    seeds: tuple[int, ...] = SEEDS
    intensities: tuple[float, ...] = INTENSITIES
    duration_s: float = 3600.0
    nodes: int = 6
    rate: float = 10.0
    clean_days: float = 1.0
    clean_nodes: int = 12
    clean_rate: float = 2.0
    trace_span_s: float = 3600.0


FULL = SuiteSize()
QUICK = SuiteSize(
    seeds=(7,),
    intensities=(1.0,),
    duration_s=3600.0,
    nodes=5,
    rate=4.0,
    clean_days=0.25,
    clean_nodes=8,
    clean_rate=1.0,
    trace_span_s=2400.0,
)


def simulator_suite(size: SuiteSize = FULL, config: DetectorConfig | None = None) -> list[ScenarioRun]:
    """Every seed and intensity with incidents, then incident-free traffic for the false-alarm rate."""
    runs = [
        simulator_run(seed, x, duration_s=size.duration_s, nodes=size.nodes, rate=size.rate, config=config)
        for seed in size.seeds
        for x in size.intensities
    ]
    runs.append(
        simulator_run(
            size.seeds[0],
            1.0,
            duration_s=size.clean_days * DAY_S,
            nodes=size.clean_nodes,
            rate=size.clean_rate,
            incidents=False,
            config=config,
        )
    )
    return runs


def traces_suite(
    size: SuiteSize = FULL, data_dir: Path = DATA_DIR, config: DetectorConfig | None = None
) -> list[ScenarioRun]:
    """Run the real Azure traces with injected runaway segments, one run per trace and seed."""
    paths = sorted((data_dir / "llm-traces").glob("*.csv"))
    return [
        traces_run(p, seed, span_s=size.trace_span_s, config=config) for p in paths for seed in size.seeds
    ]


def summarize(runs: Sequence[ScenarioRun]) -> dict[str, Any]:
    """Merge runs into per-kind reports plus the acceptance numbers."""
    incident = [r for r in runs if "incident-free" not in r.name]
    clean = [r for r in runs if "incident-free" in r.name]
    merged = merge_reports(r.evaluation.reports for r in incident)
    clean_merged = merge_reports(r.evaluation.reports for r in clean)
    loops = [n for r in runs for n in r.loop_requests_to_detect]
    clean_fa = sum(rep.false_alarms for rep in clean_merged.values())
    long_lived_days = sum(r.long_lived_entity_days for r in clean)
    return {
        "runs": [r.name for r in runs],
        "events": sum(r.events for r in runs),
        "kinds": {k: rep.to_dict() for k, rep in sorted(merged.items())},
        "incident_free": {k: rep.to_dict() for k, rep in sorted(clean_merged.items())},
        "agent_loop_requests_to_detect": {"max": max(loops) if loops else None, "all": loops},
        "bystander_runaway_alarms": [f"{r.name}: {alarm}" for r in runs for alarm in r.bystander_alarms],
        "incident_free_false_alarms": clean_fa,
        "incident_free_long_lived_entity_days": round(long_lived_days, 1),
        "incident_free_false_alarms_per_1000_entity_days": (
            round(1000.0 * clean_fa / long_lived_days, 3) if long_lived_days else None
        ),
    }


def print_report(title: str, summary: dict[str, Any]) -> None:
    """Print one suite's per-kind table."""
    table = Table(title=title)
    for column in (
        "kind",
        "windows",
        "recall",
        "precision",
        "F1",
        "delay p50 s",
        "delay p95 s",
        "alarms",
        "false",
        "FA/1000 entity-days",
    ):
        table.add_column(column)
    for kind, rep in summary["kinds"].items():
        table.add_row(
            kind,
            *(
                str(rep[k])
                for k in (
                    "windows",
                    "recall",
                    "precision",
                    "f1",
                    "delay_median_s",
                    "delay_p95_s",
                    "alarms",
                    "false_alarms",
                    "false_alarms_per_1000_entity_days",
                )
            ),
        )
    console.print(table)


def run_nab(nab_dir: Path, out: Path | None, config: DetectorConfig | None = None) -> dict[str, Any]:
    """Score NAB series with the spike scorer; write results CSVs under ``out`` when given."""
    labels = json.loads((nab_dir / "labels" / "combined_windows.json").read_text(encoding="utf-8"))
    if out is not None:
        write_nab_results(nab_dir / "data", out, labels, config.spikes if config else None)
    reports = evaluate_nab(nab_dir / "data", labels, config.spikes if config else None)
    return {"kinds": {k: rep.to_dict() for k, rep in reports.items()}}


def _suites(suite: str) -> Iterator[str]:
    yield from (("simulator", "traces", "nab") if suite == "all" else (suite,))


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command group (``burnwatch eval`` and ``burnwatch eval nab``)."""
    group = typer.Typer(help="Run the detectors offline over labeled data and report their metrics.")

    @group.callback(invoke_without_command=True)
    def eval_(
        ctx: typer.Context,
        suite: Annotated[str, typer.Option(help="simulator, traces, nab or all")] = "all",
        nab_dir: Annotated[Path, typer.Option(help="NAB-style folder: data/ and labels/")] = DATA_DIR / "nab",
        out: Annotated[Path | None, typer.Option(help="write summary.json (and NAB results) here")] = None,
        quick: Annotated[bool, typer.Option(help="the small suite the unit test runs")] = False,
    ) -> None:
        """Report precision, recall, F1, detection delay and false alarms per detector."""
        if ctx.invoked_subcommand is not None:
            return
        if suite not in ("simulator", "traces", "nab", "all"):
            raise typer.BadParameter(f"unknown suite {suite!r}", param_hint="--suite")
        size = QUICK if quick else FULL
        results: dict[str, Any] = {}
        for name in _suites(suite):
            if name == "simulator":
                results[name] = summarize(simulator_suite(size))
            elif name == "traces":
                results[name] = summarize(traces_suite(size))
            else:
                results[name] = run_nab(nab_dir, out / "nab" if out else None)
            print_report(f"burnwatch eval: {name}", results[name])
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    @group.command("nab")
    def nab_(
        data_dir: Annotated[
            Path, typer.Argument(help="NAB-style folder: data/ and labels/combined_windows.json")
        ],
        out: Annotated[Path, typer.Option(help="where to write <detector>/<category>/<series>.csv")] = Path(
            "nab-results"
        ),
    ) -> None:
        """Write per-row anomaly scores in NAB's results format for NAB's own scorer."""
        summary = run_nab(data_dir, out)
        print_report("burnwatch eval nab", summary)
        typer.echo(f"results written under {out}")

    app.add_typer(group, name="eval")


def kinds_of(findings: Iterable[Finding]) -> list[str]:
    """Return the finding kinds present, in the canonical order."""
    present = {f.kind for f in findings}
    return [k for k in FINDING_KINDS if k in present]


__all__ = [
    "FULL",
    "QUICK",
    "KindReport",
    "ScenarioRun",
    "register",
    "scenario",
    "simulator_run",
    "simulator_suite",
    "summarize",
    "traces_run",
    "traces_suite",
]
