"""ddgsim's errors: one line, exit status 2, no traceback.

Two levels. Library code (everything outside ``ddgsim/commands/`` and ``ddgsim/cli.py``) raises
:class:`DdgsimError` and its subclasses, and names what the caller passed: a parameter
(``timeout_s``), a value, a file. The command line names the same things as its flags
(``--timeout-s``): :func:`ddgsim.cli.main` prints every :class:`DdgsimError` as
``error: <message>``, and translates the parameters a :class:`ParameterError` names into the
command's flags (:meth:`ParameterError.naming`).

- :class:`DdgsimError`: something ddgsim could not do (a launched process failed, ...).
- :class:`UserError`: ... because an input is bad. Every ``except UserError`` catches the
  subclasses below.
- :class:`ParameterError`: a bad value of one named parameter (a field of a config, an argument).
- :class:`FileError`: a file (plan, profile, metrics, trace, ...) that cannot be read or is malformed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


class DdgsimError(Exception):
    """Base of the errors ddgsim raises on purpose: a library caller catches this one.

    The message is one line. A command prints ``error: <message>`` and exits with :attr:`exit_code`.
    """

    exit_code = 2


class UserError(DdgsimError):
    """Bad input from the user. The CLI prints ``error: <message>`` and exits with 2.

    The message must name the bad value and say what is accepted.
    """


class ParameterError(UserError):
    """A bad value of one named parameter: the message is the parameter's name, then ``detail``.

    Where ``detail`` names a parameter again, or another one (listed in ``others``), it writes it
    ``{name}`` (``{{name}}`` inside an f-string). ``str()`` names every parameter as the library does
    (``checkpoint_every 5 needs checkpoint_dir``); :meth:`naming` names them as a command line does
    (``--checkpoint-every 5 needs --checkpoint-dir``), which is how a command translates.
    """

    def __init__(self, param: str, detail: str, others: Sequence[str] = ()) -> None:
        self.param = param
        self.others = tuple(others)
        self._detail = detail
        super().__init__(self.naming({}))

    @property
    def detail(self) -> str:
        """The message after the parameter's name, other parameters named as the library does."""
        return self._fill(self._detail, {})

    def naming(self, names: Mapping[str, str]) -> str:
        """The message with each parameter named as ``names`` says (``{"timeout_s": "--timeout-s"}``);
        a parameter ``names`` does not hold keeps its own name."""
        return names.get(self.param, self.param) + self._fill(self._detail, names)

    def _fill(self, text: str, names: Mapping[str, str]) -> str:
        for name in (self.param, *self.others):
            text = text.replace("{" + name + "}", names.get(name, name))
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (a process pool, a queue) with its parts
        return (_parameter_error, (type(self), self.param, self._detail, self.others))


def _parameter_error(cls: type[ParameterError], param: str, detail: str, others: tuple[str, ...]) -> ParameterError:
    err = cls.__new__(cls)
    ParameterError.__init__(err, param, detail, others)
    return err


class FileError(UserError):
    """A file that cannot be read or is not what it should be: ``kind`` says what it should be
    (``plan``, ``profile``, ``metrics``, ``trace``, ...), ``where`` is its path (or a name for data
    that came from elsewhere)."""

    def __init__(self, message: str, *, kind: str = "", where: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.where = where

    def __reduce__(self) -> tuple[Any, ...]:
        return (_file_error, (type(self), str(self), self.kind, self.where))


def _file_error(cls: type[FileError], message: str, kind: str, where: str) -> FileError:
    err = cls.__new__(cls)
    FileError.__init__(err, message, kind=kind, where=where)
    return err


def malformed(kind: str, where: str, why: str) -> FileError:
    """``malformed KIND WHERE: WHY``, the one shape of every malformed-file error."""
    return FileError(f"malformed {kind} {where}: {why}", kind=kind, where=where)


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Parameter -> flag of every option of ``parser`` (``{"timeout_s": "--timeout-s"}``, the longest
    of its long spellings): how that command line names the parameters a :class:`ParameterError` names."""
    names: dict[str, str] = {}
    for action in parser._actions:
        spellings = [s for s in action.option_strings if s.startswith("--")]
        if spellings and action.dest != "==SUPPRESS==":
            names.setdefault(action.dest, max(spellings, key=len))
    return names


def command_line_message(exc: BaseException, flags: Mapping[str, str] | None = None) -> str:
    """``exc``'s message as a command line says it: a :class:`ParameterError`'s parameters named as
    ``flags`` (:func:`flag_names`) names them, any other error's message unchanged."""
    if isinstance(exc, ParameterError):
        return exc.naming(flags or {})
    return str(exc)


def choices(values: object) -> str:
    """Format accepted values for an error message: ``a, b, c``."""
    return ", ".join(str(v) for v in values)  # type: ignore[attr-defined]


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs as one space), cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
