"""A user name for MLflow under a UID without a passwd entry."""

from __future__ import annotations

import os
import pwd
from collections.abc import MutableMapping

# The variables getpass.getuser() reads, in its order, before it asks the passwd database.
USER_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


def ensure_user_name(environ: MutableMapping[str, str]) -> str | None:
    """MLflow tags a new run with getpass.getuser(), which raises KeyError for a UID that has no passwd
    entry (OpenShift's arbitrary UIDs; any runtime that adds none) and only catches ImportError: the run
    would crash before training. Name the user after the UID in $USER, the first place getuser() looks.
    Returns the name set, or None when a name was already there."""
    if any(environ.get(name) for name in USER_VARIABLES):
        return None
    uid = os.getuid()
    try:
        pwd.getpwuid(uid)
        return None
    except KeyError:
        name = f"uid-{uid}"
        environ["USER"] = name
        return name
