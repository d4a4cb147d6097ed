"""kopf's indexes as the handlers get them, built from plain bodies by the operator's own index functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kto_operator import views


def indexed(runs: Iterable[Mapping[str, Any]] = (), jobs: Mapping[str, Iterable[Mapping[str, Any]]] = {},
            pods: Mapping[str, Iterable[Mapping[str, Any]]] = {}) -> views.Views:
    """The Views of these TrainingRuns (only those a follow may act on are kept, as by `live_trainingruns`), and
    of these Jobs and pods under their runs' UIDs."""
    return views.Views(runs={key: [entry] for body in runs for key, entry in views.run_entry(body).items()},
                       jobs={uid: [views.stored_job(job) for job in found] for uid, found in jobs.items()},
                       pods={uid: [views.stored_pod(pod) for pod in found] for uid, found in pods.items()})
