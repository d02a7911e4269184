"""State-change messages sent through the Prefect blocks the spec names per severity.

Supported blocks: CustomWebhookNotificationBlock, SlackWebhook, MicrosoftTeamsWebhook,
PagerDutyWebHook, OpsgenieWebhook (any Prefect NotificationBlock, through `notify`) and
prefect-email's EmailServerCredentials (through `email_send_message`).

Delivery is checked, not assumed: apprise-based blocks swallow failures unless
`raise_on_failure()` is active, so every `notify` runs inside it; the custom webhook raises on
a non-2xx answer or a refused connection; SMTP raises on refusal. A failed channel is logged
(block name and error class only — a webhook URL may hold a token), counted in
`migwatch_notifications_total{outcome="failed"}`, and never raised: notifications must not break
the gate. Prefect is imported inside functions only, so the core stays free of it.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from migwatch import metrics
from migwatch.config import NotificationsSpec
from migwatch.lag import Notice, format_duration, format_value

log = logging.getLogger("migwatch.notifications")

#: subject prefix per notice kind
_TITLE = {"warning": "WARNING", "critical": "CRITICAL", "resolved": "RESOLVED"}


@dataclass(frozen=True)
class Message:
    subject: str
    body: str


@dataclass(frozen=True)
class Delivery:
    """What happened to one message on one channel; `error` is an error class, never a text
    that could carry a URL or token."""

    block: str
    block_type: str | None
    ok: bool
    error: str | None = None


def build_message(notice: Notice, flow_run_url: str | None = None) -> Message:
    """Subject and plain-text body: migration id, which lag, value vs threshold, ETA, link."""
    title = _TITLE.get(notice.kind, notice.kind.upper())
    what = ""
    crossed = (notice.value is not None and notice.threshold is not None
               and notice.value > notice.threshold)
    if notice.measure is not None and (notice.kind == "resolved" or crossed):
        comparison = "below" if notice.kind == "resolved" else "above"
        what = (f"{notice.measure} {format_value(notice.measure, notice.value)} {comparison} "
                f"{format_value(notice.measure, notice.threshold)}")
    elif notice.reasons:  # a stall or an error, not a threshold: say what is wrong
        what = notice.reasons[0]
    subject = f"[migwatch] {title} {notice.migration_id}: {notice.verdict.value}"
    if what:
        subject += f" — {what}"
    if notice.kind == "resolved":
        eta = "caught up" if notice.eta_seconds == 0 else "lag back under its thresholds"
    elif notice.eta_seconds is None:
        eta = "unknown (lag is not falling)"
    else:
        eta = format_duration(notice.eta_seconds)
    lines = [
        f"migration: {notice.migration_id}",
        f"state: {title} (verdict {notice.verdict.value})",
    ]
    if notice.measure is not None:
        lines.append(f"lag: {notice.measure} = {format_value(notice.measure, notice.value)} "
                     f"(threshold {format_value(notice.measure, notice.threshold)})")
    lines.append(f"ETA to catch up: {eta}")
    if notice.reasons:
        lines.append("why:")
        lines += [f"  - {r}" for r in notice.reasons]
    lines.append(f"flow run: {flow_run_url or 'not running under a Prefect flow'}")
    lines.append("at: " + dt.datetime.fromtimestamp(notice.at, dt.UTC).isoformat(
        timespec="seconds"))
    return Message(subject=subject, body="\n".join(lines))


def blocks_for(notice: Notice, spec: NotificationsSpec) -> tuple[str, ...]:
    """Block names for a notice; `resolved` (unless the spec names its own blocks) goes where
    the episode was announced: the warning blocks, and the critical ones when it got that far —
    a critical-only channel never hears of an episode that stayed a warning."""
    if notice.kind == "resolved":
        critical = spec.critical if notice.peak in (None, "critical") else ()
        names = spec.resolved or (*spec.warning, *critical)
    else:
        names = getattr(spec, notice.kind, ())
    return tuple(dict.fromkeys(names))


def send(notice: Notice, spec: NotificationsSpec, flow_run_url: str | None = None,
         loader: Callable[[str], Any] | None = None) -> list[Delivery]:
    """Send `notice` to every block named for its kind; returns one Delivery per block."""
    message = build_message(notice, flow_run_url)
    out = []
    for name in blocks_for(notice, spec):
        delivery = deliver(name, message, spec, loader or load_block)
        outcome = "sent" if delivery.ok else "failed"
        metrics.NOTIFICATIONS.labels(notice.migration_id, notice.kind, outcome).inc()
        if not delivery.ok:
            log.warning("notification %s for %s through block %r failed: %s", notice.kind,
                        notice.migration_id, name, delivery.error)
        out.append(delivery)
    return out


def deliver(name: str, message: Message, spec: NotificationsSpec,
            loader: Callable[[str], Any]) -> Delivery:
    """Load block `name` and send `message` through it; every failure becomes a Delivery."""
    try:
        block = loader(name)
    except Exception as exc:  # a missing block or an unreachable Prefect API: this channel fails
        return Delivery(name, None, False, f"cannot load block: {type(exc).__name__}")
    kind = type(block).__name__
    try:
        send_with(block, message, spec)
    except Exception as exc:  # any channel failure is reported, never raised
        return Delivery(name, kind, False, _describe(exc))
    return Delivery(name, kind, True)


def send_with(block: Any, message: Message, spec: NotificationsSpec) -> None:
    """Send through one loaded block; raises when the channel did not take the message."""
    from prefect.blocks.abstract import NotificationBlock
    from prefect_email import EmailServerCredentials

    if isinstance(block, EmailServerCredentials):
        send_email(block, message, spec.email_to, spec.email_from)
        return
    if not isinstance(block, NotificationBlock):
        raise TypeError(f"block type {type(block).__name__} cannot send notifications")
    with block.raise_on_failure():
        block.notify(message.body, message.subject)  # type: ignore[unused-coroutine]


def send_email(credentials: Any, message: Message, to: Iterable[str], sender: str) -> None:
    """One email through prefect-email's `email_send_message` (plain text and an HTML copy)."""
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_email import email_send_message

    recipients = list(to)
    if not recipients:
        raise ValueError("notifications.email_to is empty")
    run_coro_as_sync(email_send_message.fn(
        subject=message.subject, msg=f"<pre>{html.escape(message.body)}</pre>",
        msg_plain=message.body, email_server_credentials=credentials, email_from=sender,
        email_to=recipients))


#: block classes a bare name is looked up in, in this order
_BLOCK_CLASSES = (
    ("prefect.blocks.notifications", "CustomWebhookNotificationBlock"),
    ("prefect.blocks.notifications", "SlackWebhook"),
    ("prefect.blocks.notifications", "MicrosoftTeamsWebhook"),
    ("prefect.blocks.notifications", "PagerDutyWebHook"),
    ("prefect.blocks.notifications", "OpsgenieWebhook"),
    ("prefect_email", "EmailServerCredentials"),
)


def load_block(name: str) -> Any:
    """A saved block by `type-slug/name` (Prefect's form) or by bare name among the supported
    notification types; ValueError when none has that name."""
    import importlib

    from prefect.blocks.core import Block

    if "/" in name:
        return Block.load(name)
    for module, cls in _BLOCK_CLASSES:
        block_class = getattr(importlib.import_module(module), cls)
        try:
            return block_class.load(name)
        except ValueError:
            continue
    raise ValueError(f"no notification block named {name!r}")


def _describe(exc: BaseException) -> str:
    """An error class, plus the HTTP status when there is one — no message text (URLs, tokens)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")
