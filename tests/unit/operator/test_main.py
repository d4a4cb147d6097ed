"""The command line: scope is mandatory, both halves' handlers load."""

from __future__ import annotations

import pytest
from kto_operator import main


def test_scope_is_required() -> None:
    with pytest.raises(SystemExit):
        main.parse_args([])
    with pytest.raises(SystemExit):
        main.parse_args(["--namespace", "a", "--all-namespaces"])


def test_namespace_and_all_namespaces() -> None:
    args = main.parse_args(["--namespace", "team-a"])
    assert (args.namespace, args.all_namespaces) == ("team-a", False)
    assert main.parse_args(["-A"]).all_namespaces is True
    assert main.parse_args(["-n", "x", "--liveness", ""]).liveness == ""


def test_handlers_loaded() -> None:
    assert main.load_handlers() == ["kto_operator.handlers", "kto_operator.power.handlers",
                                    "kto_operator.console.handlers", "kto_operator.heap"]


@pytest.mark.parametrize(("argv", "kopf_objects"), [(["-n", "a"], "WARNING"), (["-n", "a", "--verbose"], "DEBUG")])
def test_kopfs_per_object_lines_only_when_verbose(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                  kopf_objects: str) -> None:
    import logging

    ran: list[dict[str, object]] = []
    monkeypatch.setattr(main.kopf, "run", lambda **kwargs: ran.append(kwargs))
    for name in ("kopf.objects", "httpx"):  # main sets both: restored after the test
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    monkeypatch.setattr(main, "ensure_user_name", lambda env: None)  # it would set $USER for the whole session
    monkeypatch.setattr(main.logging, "basicConfig", lambda **kwargs: None)
    assert main.main(argv) == 0 and ran[0]["namespaces"] == ["a"]
    assert logging.getLevelName(logging.getLogger("kopf.objects").level) == kopf_objects


def test_no_watch_is_restarted_for_mere_quiet_before_the_servers_own_restart() -> None:
    import kopf
    from kto_operator import handlers

    settings = kopf.OperatorSettings()
    assert settings.watching.inactivity_timeout < 300  # kopf's default: a quiet watch restarted every ~minute
    handlers.watching(settings)
    w = settings.watching
    assert w.server_timeout is not None and w.client_timeout is not None
    assert w.server_timeout < w.client_timeout <= w.inactivity_timeout
    assert w.label_selectors.collect(kopf.Resource("", "v1", "pods")) == [handlers.CHILD_SELECTOR]


def test_an_objects_worker_ends_soon_after_its_last_event_and_workers_are_not_limited() -> None:
    import kopf
    from kto_operator import handlers

    settings = kopf.OperatorSettings()
    assert settings.queueing.idle_timeout > 1.0  # kopf's default keeps each object's worker seconds after its event
    handlers.queueing(settings)
    assert settings.queueing.idle_timeout <= 1.0 and settings.queueing.worker_limit is None


def test_the_startup_handler_applies_the_kopf_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() itself, its API calls replaced: the watch timeouts, selectors and worker idle time tested above
    are the ones a started operator runs with."""
    import asyncio
    import logging

    import kopf
    from kto_operator import handlers

    async def no_service_account(kube: object, token: object) -> None:
        return None

    async def anonymous() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server="https://k8s.test")

    async def none_unrecorded(kube: object, namespace: object) -> set[str]:
        return set()

    monkeypatch.setattr(handlers.connection, "shared", lambda memo, options, user: object())
    monkeypatch.setattr(handlers.identity, "own_service_account", no_service_account)
    monkeypatch.setattr(handlers.api, "connection_info", anonymous)
    monkeypatch.setattr(handlers.context, "unrecorded", none_unrecorded)
    monkeypatch.setenv("KTO_METRICS_PORT", "0")  # no port bound
    watching, queueing = kopf.OperatorSettings(), kopf.OperatorSettings()
    handlers.watching(watching)
    handlers.queueing(queueing)

    async def main() -> kopf.OperatorSettings:
        settings, memo = kopf.OperatorSettings(), kopf.Memo(namespace="team-a")
        await handlers.configure(settings=settings, memo=memo, logger=logging.getLogger("test"),
                                 live_trainingruns={})
        memo.sweep_task.cancel()
        await asyncio.gather(memo.sweep_task, return_exceptions=True)
        await memo.trainingruns.tracker.close()
        return settings

    settings = asyncio.run(main())
    assert settings.watching == watching.watching and settings.queueing == queueing.queueing
    assert settings.peering.standalone and settings.scanning.disabled
