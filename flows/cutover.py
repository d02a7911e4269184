"""cutover: switch the application from the source to the target, after a GO.

preconditions → approval → full pass (and foreign keys validated) → freeze → drain → final
check → sequences → switch → teardown. Nothing is frozen until the approval; from the freeze to
the end of the switch any failure undoes the freeze (the source writable again, CDC still
running) and the run fails with `CutoverAborted`. The timeline, the approver and the
write-downtime (freeze → switch) go into the run's `cutover.json`, the report and metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from migwatch.config import check_migration_id, load_spec
from migwatch.cutover.final import changed_since
from migwatch.cutover.timeline import FREEZE, SWITCH, Timeline
from migwatch.errors import CutoverAborted, CutoverRefused, MigwatchError
from migwatch.runs import run_dir
from tasks.cutover import (
    applied_counts,
    check_preconditions,
    drain_to_fence,
    final_check,
    freeze_source,
    full_pass,
    notify,
    publish,
    run_hook,
    set_sequences,
    teardown_cdc,
    undo_freeze,
    validate_foreign_keys,
    wait_for_approval,
)

#: an approval that took longer than this is followed by the preconditions checked again
RECHECK_AFTER_SECONDS = 60
SELF_DECLARED = ("the approver is self-declared: Prefect's open-source server has no user "
                 "identity")


def _undo_if_frozen(flow: Any, flow_run: Any, state: Any) -> None:
    """A run cancelled (from the UI) or crashed while the source is frozen: undo the freeze
    from the run's record, so the source does not stay read-only with nobody to switch."""
    from migwatch.cutover.timeline import undo_recorded_freeze

    try:
        spec = load_spec(flow_run.parameters["spec_path"])
        undo_recorded_freeze(spec, run_dir(flow_run.parameters["migration_id"]),
                             f"the flow run was {state.name.lower()}")
    except Exception as exc:  # the hook must not hide the run's own end
        logging.getLogger("migwatch.cutover").error(
            "could not undo the freeze: %s: %s — run `migwatch cutover SPEC --migration-id ID "
            "--undo-freeze`", type(exc).__name__, exc)


@flow(name="cutover", on_cancellation=[_undo_if_frozen], on_crashed=[_undo_if_frozen])
def cutover(spec_path: str, migration_id: str, ask_approval: bool = True,
            approved_by: str | None = None, comment: str = "",
            approved_how: str = "cli") -> dict[str, Any]:
    """Switch the application to the target.

    `ask_approval`: pause for the approval form (Prefect UI or API) unless `approved_by` is
    given (the CLI's `--yes` or its prompt); False with no approver runs unattended."""
    check_migration_id(migration_id)
    spec = load_spec(spec_path)
    log = get_run_logger()
    line = Timeline(migration_id, run_dir(migration_id))

    reasons = _preconditions(line, spec, "preconditions",
                             "a recent GO, caught up, schema equal, freeze ready")
    if reasons:
        return _end(spec, line, "refused", CutoverRefused(reasons))

    with line.step("approval") as st:
        if approved_by:
            line.figures.approver, line.figures.approval = approved_by, approved_how
            line.figures.comment = comment
        elif ask_approval:
            answer = wait_for_approval(spec.cutover.approval_timeout_seconds)
            if answer is None or not answer.confirm:
                st.outcome = "failed"
                st.detail = "no approval in time" if answer is None else \
                    f"not confirmed by {answer.approver}"
            else:
                line.figures.approver, line.figures.approval = answer.approver, \
                    "Prefect run input"
                line.figures.comment = answer.comment
        else:
            line.figures.approval = "unattended (ask_approval=False)"
        if line.figures.approver:
            line.figures.notes.append(SELF_DECLARED)
            st.detail = f"approved by {line.figures.approver}"
    if st.outcome == "failed":
        return _end(spec, line, "rejected", CutoverRefused([f"approval: {st.detail}"]))
    if st.seconds is not None and st.seconds > RECHECK_AFTER_SECONDS:  # a long approval
        reasons = _preconditions(line, spec, "preconditions again", "still hold")
        if reasons:
            return _end(spec, line, "refused", CutoverRefused(reasons))
    approved = [f"approved by {line.figures.approver}"] if line.figures.approver else []
    notify(spec, migration_id, "started", approved)

    with line.step("full pass") as st:
        checked = full_pass(spec, migration_id)
        validated, not_validated = ([], []) if checked.different else \
            validate_foreign_keys(spec)
        st.detail = checked.describe() + (f"; {len(validated)} foreign key(s) validated"
                                          if validated else "")
        if checked.different or not_validated:
            st.outcome = "failed"
            st.detail = "; ".join(checked.different + [f"foreign key {f} not valid"
                                                       for f in not_validated])
    if st.outcome == "failed":
        return _end(spec, line, "refused", CutoverRefused([f"full pass: {st.detail}"]))

    frozen = None
    hooks_done: list[Any] = []
    try:
        with line.step(FREEZE) as st:
            if spec.cutover.freeze.read_only:
                frozen = freeze_source(spec)
                line.figures.sessions_terminated = len(frozen.terminated)
                line.figures.frozen_database = frozen.database
                line.figures.frozen_before = frozen.before
                line.save()  # a process that dies frozen leaves what undoes it
            for hook in spec.cutover.freeze.hooks:
                run_hook(hook, f"freeze {hook.name}", migration_id)
                hooks_done.append(hook)
            st.detail = (f"read-only source, {line.figures.sessions_terminated} session(s) "
                         "ended" if frozen else "no built-in freeze") + \
                (f"; hooks: {', '.join(h.name for h in hooks_done)}" if hooks_done else "")
        with line.step("drain") as st:
            st.detail = drain_to_fence(spec, migration_id).describe()
        with line.step("final check") as st:
            tables = changed_since(checked.counts, applied_counts(spec, migration_id),
                                   checked.unproven, [t.source for t in spec.tables])
            if spec.cutover.final_check == "none" and not checked.unproven:
                tables = []  # the drain alone vouches for the changes since the full pass
            different = final_check(spec, tables)
            if different:
                raise MigwatchError("not equal on the frozen source: " + "; ".join(different))
            st.detail = (f"{len(tables)} changed table(s) equal: {', '.join(tables)}"
                         if tables else "no table changed since the full pass")
        with line.step("sequences") as st:
            done = set_sequences(spec)
            st.detail = f"{len(done)} set" + (f": {', '.join(done[:10])}" if done else
                                              " (the target keeps none, or none used)")
        with line.step(SWITCH) as st:
            switch = spec.cutover.switch
            st.detail = run_hook(switch, "switch", migration_id) if switch else \
                "no switch hook: point the application at the target now"
    except Exception as exc:
        failed = next((s_.name for s_ in reversed(line.figures.steps)
                       if s_.outcome == "failed"), "cutover")
        log.error("cutover %s: %s failed (%s); undoing the freeze", migration_id, failed,
                  type(exc).__name__)
        try:
            with line.step("undo freeze") as st:
                line.figures.undone = undo_freeze(spec, migration_id, frozen, hooks_done)
                st.outcome, st.detail = "undone", ", ".join(line.figures.undone) or "nothing"
        except CutoverAborted as undo:
            line.figures.undone = undo.undone
            return _end(spec, line, "aborted", CutoverAborted(
                failed, f"{type(exc).__name__}: {exc}; UNDO INCOMPLETE: {undo.reason}",
                undo.undone))
        return _end(spec, line, "aborted",
                    CutoverAborted(failed, f"{type(exc).__name__}: {exc}", line.figures.undone))

    if spec.cutover.keep_cdc:
        line.skipped("teardown", "cutover.keep_cdc: the connector, slot and applier keep "
                                 "running")
    else:
        with line.step("teardown") as st:
            try:
                st.detail = teardown_cdc(spec, migration_id)
            except MigwatchError as exc:  # switched already: say so, do not undo
                st.outcome, st.detail = "failed", f"{exc} — run `migwatch teardown`"
    if frozen is not None:
        line.figures.notes.append("the source is left read-only; nothing replicates from the "
                                  "target back to the source")
    return _end(spec, line, "switched", None)


def _preconditions(line: Timeline, spec: Any, name: str, held: str) -> list[str]:
    """The preconditions checked as the timeline's step `name`; every reason they fail."""
    with line.step(name) as st:
        reasons = check_preconditions(spec, line.migration_id)
        st.detail = "; ".join(reasons) or held
        if reasons:
            st.outcome = "failed"
    return list(reasons)


def _end(spec: Any, line: Timeline, outcome: str, error: Exception | None) -> Any:
    figures = line.finish(outcome, [str(error)] if error else [])
    publish(spec, line.migration_id, figures)
    notify(spec, line.migration_id, outcome, figures.reasons)
    if error is not None:
        return Failed(message=str(error), data=error)
    return figures.model_dump(mode="json")
