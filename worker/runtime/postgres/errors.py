"""Database errors, sorted by what the worker should do about them, from PostgreSQL's SQLSTATE.

    outage   the database cannot take writes now; the same statement may succeed later: wait it out
             (connection exceptions 08, operator intervention 57P, insufficient resources 53,
             serialization failures and deadlocks 40001/40P01, read-only transaction 25006 after a
             failover, lock not available 55P03, query cancelled 57014 by a statement_timeout)
    data     the statement failed because of the values in it (class 22 data exception, class 23
             integrity constraint): find the records it refuses and dead-letter them
    operator the schema or the privileges are wrong (class 42, 3F, 28, ...): nothing a retry fixes;
             the worker stops with one line naming the SQLSTATE

The code comes from psycopg2's `pgcode`, never from the exception's class or message. An error
with no code (the connection broke before the server answered) is an outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlalchemy.exc import DBAPIError

from worker.contracts.errors import ExitStatus, OperatorError

OUTAGE_CLASSES = ("08", "53", "57P")
OUTAGE_CODES = {"25006", "40001", "40P01", "55P03", "57014"}
DATA_CLASSES = ("22", "23")


class Kind(str, Enum):
    OUTAGE = "outage"
    DATA = "data"
    OPERATOR = "operator"


@dataclass(frozen=True)
class DatabaseError:
    kind: Kind
    sqlstate: str | None
    name: str  # the driver's class name, for logs: ReadOnlySqlTransaction, DiskFull, ...
    message: str  # the server's primary message, without its DETAIL or CONTEXT (they can quote values)


def sqlstate_of(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "pgcode", None)
    return code if isinstance(code, str) and code else None


def classify(exc: DBAPIError) -> DatabaseError:
    code = sqlstate_of(exc)
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    message = (primary or str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__)[:500]
    name = type(orig).__name__
    if exc.connection_invalidated or code is None:
        return DatabaseError(Kind.OUTAGE, code, name, message)
    if code in OUTAGE_CODES or code.startswith(OUTAGE_CLASSES):
        return DatabaseError(Kind.OUTAGE, code, name, message)
    if code.startswith(DATA_CLASSES):
        return DatabaseError(Kind.DATA, code, name, message)
    return DatabaseError(Kind.OPERATOR, code, name, message)


class DatabaseMisconfigured(OperatorError):
    """A schema or privilege problem: the worker stops, naming the SQLSTATE (see worker/docs/faults.md)."""

    def __init__(self, error: DatabaseError) -> None:
        super().__init__(
            f"the database refused the worker's statement: SQLSTATE {error.sqlstate} ({error.name}): "
            f"{error.message}; fix the schema or the role's privileges (triage-worker migrate), then restart",
            exit_status=ExitStatus.OPERATOR,
        )
        self.error = error
