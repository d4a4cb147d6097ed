"""Who the operator is: a user name without a passwd entry (kopf's identity), and its own ServiceAccount
(TrainingRuns never run with it)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import pwd
from collections.abc import MutableMapping

from .api import SELF_SUBJECT_REVIEWS, Api, ApiError

# The variables getpass.getuser() reads, in its order, before it asks the passwd database.
USER_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


def ensure_user_name(environ: MutableMapping[str, str]) -> str | None:
    """kopf names the operator `<user>@<host>` unless POD_ID is set, through getpass.getuser(), which
    raises KeyError for a UID with no passwd entry (OpenShift's arbitrary UIDs; any runtime that adds
    none): the operator exited at start-up. Name the user after the UID in $USER, the first place
    getuser() looks. Returns the name set, or None when a name was already there."""
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


SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


def service_account_of(username: str | None) -> tuple[str, str] | None:
    """(namespace, name) of a ServiceAccount's user name `system:serviceaccount:NS:NAME`, else None."""
    if not username or not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, sep, name = username[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
    return (namespace, name) if sep and namespace and name and ":" not in name else None


def token_subject(token: str | None) -> str | None:
    """The `sub` claim of a JWT bearer token (not verified: only the API server's answer counts for access;
    this only tells which ServiceAccount the operator itself runs as)."""
    parts = (token or "").split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return str(sub) if sub else None


async def own_service_account(api: Api, token: str | None) -> tuple[str, str] | None:
    """The ServiceAccount the operator acts as (None when it runs as a user: a kubeconfig's certificate).

    The API server says who we are (SelfSubjectReview, GA in Kubernetes 1.28, allowed to everyone); older
    servers answer 404, and then the token's own subject tells."""
    try:
        review = await api.create(SELF_SUBJECT_REVIEWS,
                                  {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    except ApiError as err:
        if err.status not in (403, 404):
            raise
        return service_account_of(token_subject(token))
    return service_account_of(((review.get("status") or {}).get("userInfo") or {}).get("username"))
