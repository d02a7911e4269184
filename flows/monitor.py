"""monitor-until-caught-up: watch every lag until the gate passes (or fails with its reason).

Each poll is a `monitor-poll` task and each state change a `monitor-notify` task; the loop itself
(`migwatch.watch`) also serves metrics for Prometheus and moves the heartbeat row. A live progress
artifact shows the lags and the ETA; a markdown artifact is refreshed when the verdict changes;
the lag series is saved as JSON (and returned) for the report stage. Once the watch ends, a
`monitor-sequences` task reads each sequence the tables use on both sides — logical decoding does
not carry their values, the cutover sets them — into a table artifact.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from migwatch import sequences
from migwatch.config import MigrationSpec, check_migration_id, load_spec
from migwatch.errors import GateFailed
from migwatch.lag import Evaluation, Notice, Sample, one_line, progress_percent, status_rows
from migwatch.watch import Poll, WatchResult, save_samples, watch
from tasks.monitor import poll_lags, send_notification, sequences_or_why


@flow(name="monitor-until-caught-up")
def monitor_until_caught_up(spec_path: str, migration_id: str) -> dict[str, Any]:
    """Poll until every lag stays under its caught_up threshold for N polls in a row."""
    check_migration_id(migration_id)
    spec = load_spec(spec_path)
    board = _Board(migration_id)
    link = _run_link()

    def poll_fn(s: MigrationSpec, mid: str, since: float | None) -> Sample:
        return Sample.from_dict(poll_lags(s, mid, since))

    def notify_fn(notice: Notice) -> None:
        send_notification(spec, notice, flow_run_url=link)

    result = watch(spec, migration_id, poll_fn=poll_fn, notify_fn=notify_fn,
                   on_poll=board.update)
    path = save_samples(result)
    board.finish(result)
    seqs, unread = sequences_or_why(spec)
    board.sequences(seqs, unread)
    get_run_logger().info("monitor %s: %s after %d polls in %.0f s; samples in %s",
                          migration_id, "caught up" if result.passed else "gate FAILED",
                          result.polls, result.seconds, path)
    if not result.passed:
        raise GateFailed(result.reason or "gate failed")
    return {**result.to_dict(), "samples_path": str(path), "sequences": seqs,
            "sequences_unread": unread}



def _run_link() -> str:
    """This run's page in the Prefect UI, or its id when no UI address is configured."""
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run.id) or \
        f"{flow_run.id} (no Prefect UI address configured)"


class _Board:
    """The run's artifacts: live progress (lags + ETA), a status table on each verdict change."""

    def __init__(self, migration_id: str) -> None:
        self.migration_id = migration_id
        self.progress_id: UUID | None = None
        self.last_verdict: str | None = None

    def update(self, p: Poll) -> None:
        text = one_line(p.evaluation, p.gate)
        pct = 100.0 if p.gate.state == "passed" else progress_percent(p.evaluation, p.peaks)
        if self.progress_id is None:
            self.progress_id = cast(UUID, create_progress_artifact(
                progress=pct, key=f"monitor-{self.migration_id}", description=text))
        else:
            update_progress_artifact(self.progress_id, progress=pct, description=text)
        get_run_logger().info("poll %d: %s", p.number, text)
        if p.evaluation.verdict.value != self.last_verdict:
            self.last_verdict = p.evaluation.verdict.value
            create_markdown_artifact(markdown=_markdown(self.migration_id, p.evaluation),
                                     key=f"monitor-{self.migration_id}-status",
                                     description=f"verdict {self.last_verdict}")

    def finish(self, result: WatchResult) -> None:
        if result.evaluations:
            create_markdown_artifact(
                markdown=_markdown(self.migration_id, result.evaluations[-1], result),
                key=f"monitor-{self.migration_id}-status",
                description="caught up" if result.passed else "gate failed")
        series = result.to_dict()["series"]
        rows = [{k: series[k][i] for k in series} for i in range(len(series["at"]))]
        create_table_artifact(table=rows, key=f"monitor-{self.migration_id}-lags",
                              description="lags and throughput per poll")

    def sequences(self, found: list[dict[str, Any]], unread: str | None) -> None:
        """The tables' sequences: their values on source and target, how far behind."""
        behind = sum(1 for s in found if s["state"] == sequences.BEHIND)
        if unread:
            what = f"sequences could not be read: {unread}"
        elif any(s["state"] == sequences.NOT_APPLICABLE for s in found):
            what = "source values only: the target keeps no sequences"
        else:
            what = (f"{len(found)} sequence(s), {behind} behind on the target "
                    "(values do not travel with the changes; the cutover sets them)")
        create_table_artifact(table=sequences.rows(found),
                              key=f"monitor-{self.migration_id}-sequences", description=what)


def _markdown(migration_id: str, ev: Evaluation, result: WatchResult | None = None) -> str:
    lines = [f"## Monitor `{migration_id}`: {ev.verdict.value}", ""]
    if result is not None:
        lines += [("**Caught up**" if result.passed else f"**Gate failed:** {result.reason}")
                  + f" after {result.polls} polls ({result.seconds:.0f} s)", ""]
    lines += ["| measure | value | threshold | state | ETA |", "|---|---|---|---|---|"]
    lines += [f"| {r['measure']} | {r['value']} | {r['threshold']} | {r['state']} | {r['eta']} |"
              for r in status_rows(ev)]
    if ev.reasons:
        lines += ["", "Why: " + "; ".join(ev.reasons)]
    if ev.anomalies:
        lines += ["", "Anomalies: " + "; ".join(a.message for a in ev.anomalies)]
    return "\n".join(lines)
