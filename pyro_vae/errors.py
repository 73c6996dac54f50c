"""Exceptions that carry a message meant for the user.

A message names the settings it is about as placeholders, ``{batch_size}``, listed in
``settings``: ``str(error)`` reads them as the names a Python user passes
(``batch_size``), and the command line, which knows its flags, as the flags
(``--batch-size``, :meth:`Worded.worded`). The command line turns :class:`UsageError`
into ``error: <message>`` and exit status 2; library users catch it as the
:class:`ValueError` it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class Worded(Exception):
    """An exception whose message names settings, each in the words of its reader.

    :param str message: the text, with a placeholder ``{name}`` for each setting it names.
    :param settings: the names of those settings: the arguments or config fields of the
        library (``batch_size``, ``device``).
    """

    def __init__(self, message: str, *, settings: Sequence[str] = ()) -> None:
        self.template = message
        self.settings = tuple(settings)
        super().__init__(self.worded({}))

    def worded(self, names: Mapping[str, str]) -> str:
        """The message with each setting named as ``names`` says (the command line's
        flags, say); a setting ``names`` lacks keeps its own name."""
        text = self.template
        for setting in self.settings:
            text = text.replace("{" + setting + "}", names.get(setting, setting))
        return text


class UsageError(Worded, ValueError):
    """Bad input from the user: an unknown name, unusable data or a mismatched file.

    The message names the problem and, where there is one, the fix.
    """


class TrainingDiverged(Worded, RuntimeError):
    """The training loss or the parameters became non-finite.

    Raised at the end of the epoch in which it happened; the last checkpoint
    written (from the previous epoch) is left untouched.
    """


class CommandFailed(RuntimeError):
    """A command run from Python (:func:`pyro_vae.cli.run_command`) ended with a nonzero
    exit status without raising: a failed consistency check of ``pyro-vae evaluate`` or
    a failed experiment of ``pyro-vae reproduce``, whose errors the command printed.

    :ivar status: the exit status the command line would have exited with.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class WriteFailed(Worded, OSError):
    """A file could not be written (a full disk, a quota, a lost mount); the file it was
    to replace is left as it was. The command line prints it as one line, exit status 2;
    library users catch it as the :class:`OSError` it is (its ``errno`` is the cause's).
    """


class RunWarning(UserWarning):
    """Something the user should know about a run that still goes ahead (a resumed run
    whose random streams restart, say); the command line prints it as one line."""


class UnreliableWeights(RunWarning):
    """Importance weights too heavy-tailed to trust: the Pareto k-hat of many points'
    weights is above 0.7, so their importance-sampled ``log P`` may be far too low."""
