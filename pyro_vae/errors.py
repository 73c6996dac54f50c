"""Exceptions that carry a message meant for the user.

The command line turns :class:`UsageError` into ``error: <message>`` and exit
status 2; library users catch it as the :class:`ValueError` it is.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user: an unknown name, unusable data or a mismatched file.

    The message names the problem and, where there is one, the fix.
    """


class TrainingDiverged(RuntimeError):
    """The training loss or the parameters became non-finite.

    Raised at the end of the epoch in which it happened; the last checkpoint
    written (from the previous epoch) is left untouched.
    """


class RunWarning(UserWarning):
    """Something the user should know about a run that still goes ahead (a resumed run
    whose random streams restart, say); the command line prints it as one line."""


class UnreliableWeights(RunWarning):
    """Importance weights too heavy-tailed to trust: the Pareto k-hat of many points'
    weights is above 0.7, so their importance-sampled ``log P`` may be far too low."""
