"""Several processes, one audit log each, in the reference: ``audit_worker_log`` and
``audit_verify_logs`` over the reference's ``AuditLog`` and ``audit_verify``. The
naming, the copy check and the sums are shared with the native bindings
(``hopgate._audit``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

from .._audit import AuditLogsReport, StrPath, open_worker_log, verify_logs
from ._audit import AuditLog, audit_verify

__all__ = ["audit_verify_logs", "audit_worker_log"]


def audit_worker_log(directory: StrPath, *, key: bytes, fsync: Union[bool, float, None] = None) -> AuditLog:
    """A new ``AuditLog`` of this process alone in ``directory``
    (``hopgate.audit_worker_log``)."""
    return open_worker_log(lambda path: AuditLog(path, key=key, fsync=fsync), directory)


def audit_verify_logs(logs: Union[StrPath, Iterable[StrPath]], *, key: bytes) -> AuditLogsReport:
    """Verifies several logs and looks for copies among them
    (``hopgate.audit_verify_logs``)."""
    return verify_logs(logs, key=key, verify=audit_verify)
