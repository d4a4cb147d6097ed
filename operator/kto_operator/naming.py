"""Every name, label, annotation and MLflow tag key the operator writes, each built in exactly one place.

Child names are derived from the TrainingRun (never random or timestamped) so that a restarted operator
finds what it created before instead of creating a duplicate.
"""

from __future__ import annotations

import hashlib
import re

GROUP = "kto.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainingRun"
PLURAL = "trainingruns"
POWER_KIND = "PowerSchedule"
POWER_PLURAL = "powerschedules"

# Labels put on the Job and its pod template. Label values are limited to 63 characters, so the
# TrainingRun name goes through `label_value()`; the full name is in an annotation.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kto-operator"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT = "trainer"
LABEL_TRAININGRUN = f"{GROUP}/trainingrun"
LABEL_TRAININGRUN_UID = f"{GROUP}/trainingrun-uid"
ANNOTATION_TRAININGRUN = f"{GROUP}/trainingrun-name"
ANNOTATION_MLFLOW_RUN_ID = f"{GROUP}/mlflow-run-id"
# On a TrainingRun made by the console's "run again": the name of the run it was made from.
ANNOTATION_RERUN_OF = f"{GROUP}/rerun-of"

# The recommended name label: the operator's own Deployment (never put to sleep), the Sandbox mode's switch.
LABEL_NAME = "app.kubernetes.io/name"
OPERATOR_NAME = "kto-operator"
POWER_SWITCH_NAME = "kto-power"

# PowerSchedule: one-shot manual events, e.g.
# `kubectl annotate power NAME kto.dev/wake-requested-at=2026-11-26T08:00:00Z`.
ANNOTATION_WAKE_REQUESTED_AT = f"{GROUP}/wake-requested-at"
ANNOTATION_SLEEP_REQUESTED_AT = f"{GROUP}/sleep-requested-at"
# Written on each workload a PowerSchedule put to sleep: the value before, the value set (a differing value
# at wake means a person changed it), who slept it and when.
ANNOTATION_SAVED_REPLICAS = f"{GROUP}/saved-replicas"  # replicas before sleep ("3")
ANNOTATION_SET_REPLICAS = f"{GROUP}/set-replicas"  # replicas set ("0")
ANNOTATION_SAVED_SUSPEND = f"{GROUP}/saved-suspend"  # CronJob spec.suspend before sleep ("false")
ANNOTATION_SET_SUSPEND = f"{GROUP}/set-suspend"  # spec.suspend set ("true")
ANNOTATION_SLEPT_BY = f"{GROUP}/slept-by"  # the PowerSchedule's name
ANNOTATION_SLEPT_AT = f"{GROUP}/slept-at"  # RFC 3339 time of the sleep
# Dailyclean's opt-out label (its users keep their labels): a workload labelled "false" never sleeps.
LABEL_DAILYCLEAN = "axa.com/dailyclean"

# The web console: its session cookie and the header that carries a session's CSRF token on every write; the
# header an oauth-proxy in front of it forwards the signed-in user's token in.
CONSOLE_COOKIE = "kto-console"
CONSOLE_CSRF_HEADER = "X-CSRF-Token"
CONSOLE_PROXY_TOKEN_HEADER = "X-Forwarded-Access-Token"

# Prefix of kopf's annotations an older operator wrote (kopf's bookkeeping is in status.kopf).
KOPF_PREFIX = GROUP
FINALIZER = f"{GROUP}/finalizer"

# MLflow tags on the run. The UID tag is the idempotency key: the run is looked up by it before one is
# created.
TAG_UID = f"{GROUP}/uid"
TAG_NAMESPACE = f"{GROUP}/namespace"
TAG_TRAININGRUN = f"{GROUP}/trainingrun"
TAG_JOB = f"{GROUP}/job"
TAG_IMAGE = f"{GROUP}/image"
TAG_IMAGE_ID = f"{GROUP}/image-id"  # the image by digest, once the trainer pod pulled it

# The trainer container's name in the Job (the status mapper looks for it).
CONTAINER_NAME = "trainer"

DNS_LABEL_MAX = 63
# The largest value of an int32 field of a Kubernetes object (a Job's ttlSecondsAfterFinished).
INT32_MAX = 2**31 - 1
_HASH_LEN = 8
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_INVALID_CHARS_RE = re.compile(r"[^a-z0-9-]+")
_UID_RE = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def is_dns_label(name: str) -> bool:
    """True for a valid RFC 1123 label: lower-case alphanumerics and '-', at most 63 characters."""
    return len(name) <= DNS_LABEL_MAX and bool(_DNS_LABEL_RE.match(name))


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def _shorten(base: str, original: str, limit: int) -> str:
    """Cut `base` to fit `limit` with a hash of `original` appended, keeping a valid DNS label."""
    head = base[: limit - _HASH_LEN - 1].strip("-")
    return f"{head}-{_short_hash(original)}" if head else _short_hash(original)


def job_name(trainingrun_name: str) -> str:
    """The Job's name: the TrainingRun's name when that is already a valid DNS label (the common case,
    readable in `kubectl get jobs`), otherwise a sanitised, truncated name plus a short hash of the
    original so two long names with the same prefix never collide.

    Jobs need a DNS label (not a subdomain): the Job controller copies the name into the pods'
    `job-name` label, whose values are limited to 63 characters.
    """
    if is_dns_label(trainingrun_name):
        return trainingrun_name
    base = _INVALID_CHARS_RE.sub("-", trainingrun_name.lower()).strip("-")
    return _shorten(base, trainingrun_name, DNS_LABEL_MAX)


def label_value(value: str) -> str:
    """A label value for `value`: itself when valid, else a shortened form with a hash."""
    if len(value) <= DNS_LABEL_MAX and _LABEL_VALUE_RE.match(value):
        return value
    return job_name(value)


def trainingrun_labels(name: str, uid: str) -> dict[str, str]:
    """Labels on everything created for one TrainingRun (Job and pod template)."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: COMPONENT,
        LABEL_TRAININGRUN: label_value(name),
        LABEL_TRAININGRUN_UID: uid,
    }


def run_tags(*, namespace: str, name: str, uid: str, job: str, image: str) -> dict[str, str]:
    """MLflow tags identifying the TrainingRun behind a run."""
    return {
        TAG_UID: uid,
        TAG_NAMESPACE: namespace,
        TAG_TRAININGRUN: name,
        TAG_JOB: job,
        TAG_IMAGE: image,
    }


def uid_filter(uid: str) -> str:
    """MLflow search filter for the run created for the TrainingRun with this UID."""
    # Backticks quote a tag key containing '.' and '/'. A UID is hex and dashes; anything else is refused
    # rather than escaped, so no value can change the filter's meaning.
    if not _UID_RE.match(uid):
        raise ValueError(f"not a Kubernetes UID: {uid!r}")
    return f"tags.`{TAG_UID}` = '{uid}'"
