"""The one exception type of this project: a message an operator can act on, plus a hint."""

from __future__ import annotations

from typing import Any


class OperatorError(Exception):
    """A failure explained for the person running the play.

    ``message`` names the problem, ``hint`` names the fix, ``details`` carries structured facts
    (revision left, paths, versions) that the module returns beside the message.
    """

    def __init__(self, message: str, hint: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.hint}" if self.hint else self.message
