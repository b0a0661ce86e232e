"""Objects named ``"package.module:attr"``: the one place otpkit imports by name.

Actor classes and start functions of child specs, scheduled tasks, conflict resolvers
and the root of ``otpkit run`` travel as such names; each user turns a
:class:`~otpkit.errors.LoadError` into its own error.
"""

from __future__ import annotations

import importlib
from typing import Any

from otpkit.errors import LoadError

__all__ = ["load_object"]


def load_object(target: str) -> Any:
    """The object ``target`` names: ``"package.module:attr"``, where ``attr`` may be
    dotted (``"os:path.join"``).

    Raises:
        LoadError: ``problem`` is ``"form"`` (no ``:``, or nothing on one side of it),
            ``"import"`` (the module raised ImportError) or ``"attribute"`` (an
            attribute of the path is missing).

    Anything else importing the module raises (an error in its code) passes through.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(target, "form", module_name, attr)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoadError(target, "import", module_name, attr, exc) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise LoadError(target, "attribute", module_name, attr, exc) from exc
    return obj
