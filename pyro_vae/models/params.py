"""Unique names in Pyro's global param store, and their release.

Pyro keys parameters by name in one global store. Two live models under one name would
share entries there, and the second would silently train the first one's parameters;
a model that is gone would keep its parameters alive. :func:`claim_name` refuses the
first, and :func:`release` (run when a model is garbage-collected) ends the second.
"""

from __future__ import annotations

import gc
import itertools
import weakref

import pyro
from pyro.params.param_store import module_from_param_with_module_name

from pyro_vae.errors import UsageError

#: live models by name; an entry disappears when its model is garbage-collected
_live: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_ids = itertools.count()


def claim_name(model, name: str | None) -> str:
    """A name for ``model`` that no other live model holds: ``name`` itself, or for
    ``None`` its kind and a number (``vae0``).

    :raises UsageError: if another live model holds ``name``.
    """
    if name is None:
        name = f"{model.kind}{next(_ids)}"
        while name in _live:
            name = f"{model.kind}{next(_ids)}"
    elif not isinstance(name, str) or not name or "$$$" in name:
        raise UsageError(f"a model name must be a non-empty string without '$$$', got {name!r}")
    elif name in _live:
        gc.collect()  # a model in a reference cycle may be dead but not yet collected
        if name in _live:
            raise UsageError(
                f"another live model is named {name!r}. Pyro's param store keys parameters "
                "by name, so the second model would silently train the first one's "
                "parameters; give each model its own name= (or none: a unique one is chosen)"
            )
    _live[name] = model
    return name


def name_taken(name: str) -> bool:
    """Whether a live model holds ``name``."""
    if name in _live:
        gc.collect()  # a model in a reference cycle may be dead but not yet collected
    return name in _live


def release(pyro_names: set[str]) -> None:
    """Drop a dead model's parameters from Pyro's global param store."""
    store = pyro.get_param_store()
    for key in [k for k in store.keys() if module_from_param_with_module_name(k) in pyro_names]:
        del store[key]
