"""A chat message as the conversation view shows it: a row of HTML, incoming on the left, sent on the
right with its delivery state (✓ delivered, ✓✓ read), an attachment as a link that saves it.
"""

from __future__ import annotations

import html
from typing import Final

from dmds.gui.conversations import ChatMessage, Direction, Status, human_size

__all__ = ["ATTACHMENT_SCHEME", "DELIVERED_MARK", "READ_MARK", "message_html"]

DELIVERED_MARK: Final = "✓"
READ_MARK: Final = "✓✓"
#: The scheme of the links to received (and sent) files in the conversation: attachment:<id>.
ATTACHMENT_SCHEME: Final = "attachment"


def _attachment_html(message: ChatMessage) -> str:
    attached = message.attachment
    if attached is None:
        return ""
    label = f"{html.escape(attached.name)} ({human_size(attached.size)})"
    if attached.attachment_id:
        shown = (
            f"<a href='{ATTACHMENT_SCHEME}:{attached.attachment_id}'><b>{label}</b></a>"
            " <span style='color:#666'>· click to save</span>"
        )
    elif message.status is Status.FAILED:
        shown = f"{label} <span style='color:#666'>· not sent</span>"
    else:
        shown = f"{label} <span style='color:#666'>· uploading…</span>"
    return f"<br><span style='color:#555'>Attachment:</span> {shown}"


def message_html(message: ChatMessage) -> str:
    when = message.time.strftime("%H:%M:%S")
    number = f"#{message.message_id}" if message.message_id is not None else ""
    text = html.escape(message.text).replace("\n", "<br>") + _attachment_html(message)
    if message.direction is Direction.IN:
        header = f"<b>{html.escape(message.peer)}</b> · {number} · {when}"
        cells = f"<td bgcolor='#ffffff' style='padding:6px'>{header}<br>{text}</td><td width='25%'></td>"
    else:
        if message.status is Status.READ:
            state = f"<span style='color:#1565c0'><b>{READ_MARK}</b> read</span>"
        elif message.status is Status.DELIVERED:
            state = f"<span style='color:#1b7a2f'><b>{DELIVERED_MARK}</b> delivered</span>"
        elif message.status is Status.SENT:
            state = "<span style='color:#666'>sent, not delivered yet</span>"
        elif message.status is Status.FAILED:
            state = f"<span style='color:#b00020'>✗ not sent: {html.escape(message.error)}</span>"
        else:
            state = "<span style='color:#666'>sending…</span>"
        parts = " · ".join(part for part in ("<b>You</b>", number, when, state) if part)
        cells = f"<td width='25%'></td><td bgcolor='#dcf0ff' style='padding:6px'>{parts}<br>{text}</td>"
    return f"<table width='100%' cellspacing='4' cellpadding='6'><tr>{cells}</tr></table>"
