"""Errors comfycord raises, and which of them a user may see.

ComfycordError
├── UserError                 message is safe to show to a Discord member as is
│   ├── ConfigError           settings file or environment is wrong (names file and key)
│   ├── WorkflowError         a workflow pack (YAML or graph) is wrong (names file and key)
│   ├── InvalidValue          a parameter value is out of range / unknown (names the param)
│   ├── NotAllowed            policy, permissions, banned words
│   │   └── LimitReached      too many jobs queued or running, or in cooldown
│   ├── NotFound              unknown workflow, job...
│   └── ComfyError            anything that went wrong on the ComfyUI side
│       ├── BackendUnavailable    ComfyUI is unreachable or answered 5xx
│       ├── NoBackend             no backend of the pool has the nodes or models a job needs
│       ├── PromptRejected        400 from /prompt (node_errors explained)
│       ├── ExecutionFailed       execution_error during the run
│       ├── Interrupted           the run was interrupted or cancelled
│       └── OutputMissing         history/view never gave the outputs
└── (anything else is a bug: logged with its traceback, users see a job id)
"""

from __future__ import annotations

from typing import Any


class ComfycordError(Exception):
    """Base of every error comfycord raises on purpose."""


class UserError(ComfycordError):
    """An error whose message is written for the user and safe to show as is."""

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(UserError):
    """The settings file or environment is wrong."""


class WorkflowError(UserError):
    """A workflow pack (its YAML or its graph) is wrong."""


class InvalidValue(UserError):
    """A value given for a workflow parameter is not acceptable."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"`{param}`: {problem}")
        self.param = param
        self.problem = problem


class NotAllowed(UserError):
    """The action is not allowed here or for this member."""


class LimitReached(NotAllowed):
    """The requester has too many jobs queued or running, or is in cooldown."""


class NotFound(UserError):
    """The named thing (workflow, job) does not exist."""


class ComfyError(UserError):
    """Something went wrong on the ComfyUI side."""


class BackendUnavailable(ComfyError):
    """ComfyUI could not be reached, or answered with a server error."""


class NoBackend(ComfyError):
    """No ComfyUI backend has every node class and model file a job needs."""


class PromptRejected(ComfyError):
    """ComfyUI refused the prompt (HTTP 400); the message explains each node error."""

    def __init__(self, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = body or {}


class ExecutionFailed(ComfyError):
    """A node raised while ComfyUI ran the prompt."""

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        exception_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type


class Interrupted(ComfyError):
    """The prompt was interrupted (cancelled) before it finished."""


class OutputMissing(ComfyError):
    """ComfyUI said the prompt finished but its outputs could not be fetched."""
