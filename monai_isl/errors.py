"""User-facing errors, and a hook that prints their message as the last lines of a failed run.

A wrong input or setting fails deep inside ``python -m monai.bundle run``: MONAI wraps the project's message in
``RuntimeError: Failed to instantiate component ...`` and the traceback ends 50-200 lines below it. The biologist
reading the terminal needs the cause, not the stack. :func:`install_hook` (run when ``monai_isl`` is imported, as
every bundle config does, and by the CLI) keeps Python's traceback for bug reports and then prints::

    monai-isl: error: <the project's message>

as the final line(s). The message is found in the exception chain: the innermost :class:`MonaiIslError`, or else
the innermost exception raised by the project's own code (its ``ValueError``/``FileNotFoundError`` messages name
the file, key or setting and what was expected).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from types import TracebackType

PACKAGE_DIR = Path(__file__).resolve().parent


class MonaiIslError(Exception):
    """An error the user can act on: the message names the file, datalist entry or setting and what was expected."""


class SettingError(MonaiIslError, ValueError):
    """A bundle or command-line setting has a wrong type, range or meaning, or is unknown."""


class DataError(MonaiIslError, ValueError):
    """An input image, annotation or datalist is missing, unreadable or not what the bundle expects."""


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return seen


def _raised_by_project(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)


def user_message(exc: BaseException) -> str | None:
    """The project's message for a failure, or None when the failure did not come from the project's checks."""
    chain = _chain(exc)
    ours = [e for e in chain if isinstance(e, MonaiIslError)]
    if not ours:
        ours = [
            e
            for e in chain
            if _raised_by_project(e) and isinstance(e, (ValueError, FileNotFoundError, KeyError, TypeError))
        ]
    if not ours:
        return None
    inner = ours[-1]
    text = str(inner.args[0]) if isinstance(inner, KeyError) and inner.args else str(inner)
    return text.strip() or type(inner).__name__


def format_user_error(message: str) -> str:
    """``monai-isl: error: ...`` with every further line of the message indented under it."""
    lines = message.splitlines() or [""]
    return "\n".join([f"monai-isl: error: {lines[0]}", *(f"  {line}" for line in lines[1:])])


def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None, previous=sys.__excepthook__) -> None:
    previous(kind, exc, tb)
    if isinstance(exc, KeyboardInterrupt):
        return
    message = user_message(exc)
    if message:
        print("\n" + format_user_error(message), file=sys.stderr, flush=True)


def install_hook() -> None:
    """Print the project's message after the traceback of any uncaught error (idempotent)."""
    current = sys.excepthook
    if getattr(current, "_monai_isl", False):
        return

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _hook(kind, exc, tb, previous=current)

    hook._monai_isl = True  # type: ignore[attr-defined]
    sys.excepthook = hook
