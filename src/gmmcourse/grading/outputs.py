"""The output budget of a submission's kernel: what its messages may cost the grader.

`BudgetedClient` is nbclient with an output budget, no widget state, and an export mode;
`message_size` is the full serialised size a message counts with. Used by
`gmmcourse.grading.kernels` (one per kernel start; the budget carries over a restart).
"""

from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient

from .protocol import EXPORT_MIME

__all__ = ["BudgetedClient", "message_size"]


def message_size(msg: dict) -> int:
    """The full serialised size of a message's payload (content, metadata, buffers)."""
    try:
        n = len(json.dumps(msg.get("content", {}), default=str))
        n += len(json.dumps(msg.get("metadata", {}), default=str))
    except (TypeError, ValueError, RecursionError):
        return 1 << 62
    for b in msg.get("buffers") or ():
        try:
            n += len(b)
        except TypeError:
            n += 1 << 20
    return n


class BudgetedClient(NotebookClient):
    """nbclient with an output budget, no widget state, and an export mode.

    ``mode``: ``"student"`` (outputs kept within the budget), ``"replay"`` (outputs dropped)
    or ``"export"`` (only tagged answers are collected, into ``export_payloads``).
    """

    output_budget: int = 1 << 20
    output_limit: int = 1 << 20
    truncated: bool = False
    mode: str = "student"
    export_payloads: list
    export_count: int = 0
    export_cap: int = 4 << 20

    def process_message(self, msg, cell, cell_index):  # noqa: D102
        t = msg.get("msg_type")
        if t in ("status", "execute_input"):
            return super().process_message(msg, cell, cell_index)
        if t is None or t.startswith("comm"):  # no widget state, no comm handlers
            return None
        if self.mode == "replay":
            return None
        if self.mode == "export":
            if t in ("display_data", "execute_result", "update_display_data"):
                data = (msg.get("content") or {}).get("data") or {}
                if isinstance(data, dict) and EXPORT_MIME in data:
                    self.export_count += 1
                    v = data[EXPORT_MIME]
                    if len(self.export_payloads) < 2:
                        self.export_payloads.append(v[: self.export_cap + 64] if isinstance(v, str) else None)
            return None
        size = message_size(msg)
        if t == "stream" and size > self.output_budget > 0:
            text = str((msg.get("content") or {}).get("text", ""))[: self.output_budget]
            msg = {**msg, "content": {"name": msg["content"].get("name", "stdout"), "text": text}, "metadata": {}}
            self.output_budget = 0
            super().process_message(msg, cell, cell_index)
            size = 1
        if size > self.output_budget:
            if not self.truncated and t != "update_display_data":
                cell.outputs.append(
                    nbformat.v4.new_output(
                        "stream",
                        name="stderr",
                        text="\n[autograder: output truncated: the notebook printed more than "
                        f"{self.output_limit} characters]\n",
                    )
                )
                self.truncated = True
            self.output_budget = 0
            return None
        self.output_budget -= size
        return super().process_message(msg, cell, cell_index)

    def set_widgets_metadata(self):  # noqa: D102 - never store widget state
        return None
