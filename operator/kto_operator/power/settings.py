"""Settings of the power half: read once from the environment in its startup handler, validated as
OperatorSettings are (a bad value stops the operator at start with the variable's name)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kto_operator.settings import env_float, env_int


@dataclass(frozen=True)
class PowerSettings:
    operator_deployment: str | None = None  # a Deployment name never to scale (besides the label)
    ready_timeout: float = 600.0  # a wake group not Ready after this goes on anyway (Warning Event)
    poll: float = 1.0  # seconds between passes while a transition is in progress
    max_wait: float = 60.0  # longest wait between passes when nothing is scheduled sooner
    parallelism: int = 16  # concurrent workload patches

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PowerSettings:
        """Raises SettingsError for a value that is no number or under its minimum."""
        return cls(
            operator_deployment=env.get("KTO_OPERATOR_DEPLOYMENT") or None,
            ready_timeout=env_float(env, "KTO_POWER_READY_TIMEOUT", cls.ready_timeout),
            # A pass every few milliseconds would only load the API server: 50 ms at least.
            poll=env_float(env, "KTO_POWER_POLL", cls.poll, minimum=0.05),
            max_wait=env_float(env, "KTO_POWER_MAX_WAIT", cls.max_wait, minimum=0.05),
            parallelism=env_int(env, "KTO_POWER_PARALLELISM", cls.parallelism, minimum=1),
        )
