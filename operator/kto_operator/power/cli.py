"""`python -m kto_operator.power --state off|on`: the platform's ON/OFF switch as a one-shot command, no CRD.

For namespaces where no CRD can be installed (the OpenShift Developer Sandbox): the CronJobs of
manifests/sandbox/power run it for the schedule, `kubectl create job --from=cronjob/kto-power-on ...` (or
this command on your machine, with your own login) is the button. The same patches as the operator's
PowerSchedule (exact replica counts saved on each workload), its record in the `kto-power` ConfigMap.

    --state off   training Jobs running? wait up to --wait-for-training, else exit 3 (deferred) unless --force;
                  then Deployments, CronJobs, StatefulSets to sleep (0 replicas / suspended), values saved.
    --state on    StatefulSets, then Deployments (each group Ready, at most --ready-timeout), then CronJobs,
                  restored exactly; --revive also brings back what someone else scaled to 0 (the Sandbox idler).

Its API calls (and the Role of manifests/sandbox/power): Deployments, StatefulSets, CronJobs get/list/patch;
Jobs list; the one ConfigMap get/create/patch. Nothing of kto.dev: it runs where the CRDs are absent.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import kopf

from kto_operator import api, naming, times
from kto_operator.api import CONFIGMAPS, JOBS, Api, ApiError, Conflict
from kto_operator.power import switch, workloads
from kto_operator.power.reconcile import SLEEP_ORDER, WAKE_ORDER, WORKLOADS, patch_planned
from kto_operator.power.schedule import GOING_TO_SLEEP, OFF, ON, WAKING_UP
from kto_operator.power.switch import EXIT_DEFERRED, EXIT_ERROR, EXIT_OK, Record
from kto_operator.power.workloads import CRONJOB, Selection, WakeAction

DEFAULT_CONFIGMAP = "kto-power"


@dataclasses.dataclass(frozen=True)
class Options:
    namespace: str
    selection: Selection
    configmap: str = DEFAULT_CONFIGMAP
    wait_for_training: float = 0.0  # seconds a sleep waits for running trainer Jobs before it is deferred
    ready_timeout: float = 600.0  # a wake goes on past a group not Ready after this (reason WakeTimeout)
    poll: float = 2.0
    force: bool = False  # sleep even under a running training
    revive: bool = False


class Switch:
    """One switch, off or on, in one namespace. Every step is idempotent: killed half-way, run it again."""

    def __init__(self, kube: Api, opts: Options, *, now: Callable[[], datetime] = times.now,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 out: Callable[[str], None] = print) -> None:
        self.kube, self.opts = kube, opts
        self.now, self.sleep, self.out = now, sleep, out
        self.stored = False  # the ConfigMap exists

    def say(self, text: str) -> None:
        self.out(f"{times.format_time(self.now())} {self.opts.namespace}: {text}")

    # The record --------------------------------------------------------------------------------------------
    async def load(self) -> Record:
        cm = await self.kube.get(CONFIGMAPS, self.opts.namespace, self.opts.configmap)
        if cm is None:
            return Record()
        self.stored = True
        return Record.from_data(cm.get("data"))

    async def save(self, record: Record) -> Record:
        ns, name = self.opts.namespace, self.opts.configmap
        if not self.stored:
            created = switch.configmap(name, record)
            try:
                await self.kube.create(CONFIGMAPS, {**created, "metadata": {**created["metadata"], "namespace": ns}})
                self.stored = True
                return record
            except ApiError as err:
                if err.status != 409:  # 409: created meanwhile (another switch): patch it
                    raise
                self.stored = True
        await self.kube.patch(CONFIGMAPS, ns, name, {"data": record.to_data()})
        return record

    async def transition(self, record: Record, state: str, reason: str, message: str, **changes: Any) -> Record:
        self.say(f"{state}: {message}")
        return await self.save(dataclasses.replace(record, state=state, reason=reason, message=message,
                                                   last_transition=times.format_time(self.now()), **changes))

    # Off ----------------------------------------------------------------------------------------------------
    async def trainers(self) -> list[str]:
        return switch.active_trainers(await self.kube.list(JOBS, self.opts.namespace))

    async def wait_for_trainers(self) -> list[str]:
        """The trainer Jobs still running after waiting up to --wait-for-training for them to end."""
        deadline = time.monotonic() + self.opts.wait_for_training
        busy = await self.trainers()
        if busy:
            self.say(f"training Jobs running: {', '.join(busy)}; waiting up to {self.opts.wait_for_training:.0f} s")
        while busy and time.monotonic() < deadline:
            await self.sleep(min(self.opts.poll * 5, max(0.0, deadline - time.monotonic())))
            busy = await self.trainers()
        return busy

    async def off(self) -> int:
        record = await self.load()
        if not self.opts.force:
            busy = await self.wait_for_trainers()
            if busy:
                message = (f"sleep deferred: training Jobs running: {', '.join(busy)} (--force sleeps anyway; "
                           "their pods would lose MLflow and MinIO)")
                self.say(message)
                await self.save(dataclasses.replace(record, reason=switch.SLEEP_DEFERRED, message=message))
                return EXIT_DEFERRED
        record = await self.transition(record, GOING_TO_SLEEP, switch.SWITCHED, "putting the platform to sleep")
        now_iso = times.format_time(self.now())
        by_kind: dict[str, list[dict[str, Any]]] = {}
        failed: list[str] = []
        for kind in SLEEP_ORDER:
            objs = await self.kube.list(WORKLOADS[kind], self.opts.namespace)

            def plan(o: Mapping[str, Any], kind: str = kind) -> dict[str, Any] | None:
                return workloads.sleep_patch(kind, o, self.opts.configmap, now_iso)

            after = {}
            for obj in workloads.managed(kind, objs, self.opts.selection):
                result = await patch_planned(self.kube, kind, self.opts.namespace, obj, plan, lambda p: p)
                if result is None:
                    continue
                planned, outcome = result
                if isinstance(outcome, Conflict):
                    failed.append(str(outcome))
                elif outcome is not None:
                    after[outcome["metadata"]["name"]] = outcome
                    saved = planned["metadata"]["annotations"].get(naming.ANNOTATION_SAVED_REPLICAS)
                    self.say(f"{switch.key(kind, obj)}: {'suspended' if kind == CRONJOB else f'{saved} -> 0'}")
            by_kind[kind] = [after.get(o["metadata"]["name"], o) for o in workloads.managed(kind, objs,
                                                                                           self.opts.selection)]
        if failed:
            self.say(f"not all asleep, run it again: {'; '.join(failed)}")
            await self.save(dataclasses.replace(record, reason=switch.FAILED, message="; ".join(failed)))
            return EXIT_ERROR
        slept = workloads.status_workloads(by_kind)
        await self.transition(record, OFF, switch.SWITCHED, f"asleep: {len(slept)} workload(s) put to sleep",
                        workloads=tuple(slept), awake=switch.awake_counts(by_kind, record.awake))
        return EXIT_OK

    # On -----------------------------------------------------------------------------------------------------
    async def on(self) -> int:
        record = await self.load()
        record = await self.transition(record, WAKING_UP, switch.SWITCHED, "waking the platform up")
        ns, sel = self.opts.namespace, self.opts.selection
        waiting_for = {(w.get("kind"), w.get("name")) for w in record.workloads}
        deadline = time.monotonic() + self.opts.ready_timeout
        late: list[str] = []
        failed: list[str] = []
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for kind in WAKE_ORDER:
            objs = await self.kube.list(WORKLOADS[kind], ns)
            managed = {o["metadata"]["name"] for o in workloads.managed(kind, objs, sel)}

            def plan(o: Mapping[str, Any], kind: str = kind, managed: set[str] = managed) -> WakeAction | None:
                # Whatever this switch slept wakes (even if no longer selected); only managed ones are revived.
                return switch.wake_plan(kind, o, record.awake, self.opts.revive and o["metadata"]["name"] in managed)

            restored = [n for k, n in waiting_for if k == kind]
            for obj in objs:
                result = await patch_planned(self.kube, kind, ns, obj, plan, lambda a: a.patch)
                if result is None:
                    continue
                action, outcome = result
                if isinstance(outcome, Conflict):
                    failed.append(str(outcome))
                elif outcome is not None:
                    self.say(action.detail)
                    restored.append(obj["metadata"]["name"])
            objs = await self.wait_ready(kind, restored, deadline, late)
            by_kind[kind] = list(workloads.managed(kind, objs, sel))
        left_down = [f"{kind}/{name}" for kind, objs in by_kind.items()
                     for name, _ in switch.idled(kind, objs, record.awake)]
        notes = []
        if late:
            notes.append(f"not Ready after {self.opts.ready_timeout:.0f} s: {', '.join(late)}")
        if left_down:
            notes.append(f"at 0 but not put to sleep by this switch (the Sandbox idler? --revive brings them "
                         f"back): {', '.join(left_down)}")
        if failed:
            notes.append(f"kept changing, run it again: {'; '.join(failed)}")
        reason = switch.FAILED if failed else switch.WAKE_TIMEOUT if late else switch.SWITCHED
        await self.transition(record, ON, reason, "; ".join(["awake", *notes]), workloads=(),
                        awake=switch.awake_counts(by_kind, record.awake))
        return EXIT_ERROR if failed else EXIT_OK

    async def wait_ready(self, kind: str, names: Sequence[str], deadline: float,
                         late: list[str]) -> list[dict[str, Any]]:
        """Poll until the restored workloads of `kind` are Ready or the deadline passes; the last listing."""
        while True:
            objs = await self.kube.list(WORKLOADS[kind], self.opts.namespace)
            pending = switch.not_ready(kind, objs, names)
            if not pending:
                return objs
            if time.monotonic() >= deadline:
                late.extend(f"{kind}/{n}" for n in pending)
                self.say(f"{kind}s not Ready in time, going on: {', '.join(pending)}")
                return objs
            await self.sleep(min(self.opts.poll, max(0.0, deadline - time.monotonic())))


# Command line -------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kto_operator.power", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, choices=("on", "off"), help="switch the platform on or off")
    parser.add_argument("-n", "--namespace", default=None,
                        help="default: $POD_NAMESPACE, else your kubeconfig context's namespace")
    parser.add_argument("-l", "--selector", default="",
                        help="label selector of the workloads to switch (kubectl syntax); default: all")
    parser.add_argument("--exclude", action="append", default=[], metavar="SELECTOR",
                        help="never switch workloads matching this selector (repeatable)")
    parser.add_argument("--configmap", default=DEFAULT_CONFIGMAP, help="the record's ConfigMap; default %(default)s")
    parser.add_argument("--wait-for-training", type=float, default=0.0, metavar="SECONDS",
                        help="off: wait this long for running trainer Jobs to end before deferring; default 0")
    parser.add_argument("--force", action="store_true", help="off: sleep even while a training runs")
    parser.add_argument("--revive", action="store_true",
                        help="on: also scale back up what someone else scaled to 0 (the Sandbox idler), to the "
                             "count recorded at the last switch")
    parser.add_argument("--ready-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="on: go on past a group not Ready after this; default %(default)s")
    parser.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def options(args: argparse.Namespace, namespace: str, env: Mapping[str, str]) -> Options:
    return Options(
        namespace=namespace,
        selection=switch.selection(args.selector, args.exclude, env.get("KTO_OPERATOR_DEPLOYMENT") or None),
        configmap=args.configmap, wait_for_training=args.wait_for_training, ready_timeout=args.ready_timeout,
        poll=args.poll, force=args.force, revive=args.revive)


async def switch_once(args: argparse.Namespace) -> int:
    config = api.load_config()
    # The kubeconfig context's own namespace only: lightkube's "default" for none is no choice of the user's.
    namespace = args.namespace or os.environ.get("POD_NAMESPACE") or config.context.namespace
    if not namespace:
        print("kto-power: error: no namespace (--namespace, $POD_NAMESPACE or the kubeconfig's)", file=sys.stderr)
        return 2
    opts = options(args, namespace, os.environ)
    kube = Api.connect(config=config)
    try:
        sw = Switch(kube, opts, out=lambda line: print(line, flush=True))
        return await (sw.off() if args.state == "off" else sw.on())
    finally:
        await kube.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(switch_once(args))
    except switch.SelectorError as err:
        print(f"kto-power: error: {err}", file=sys.stderr)
        return 2
    except (ApiError, httpx.HTTPError, kopf.LoginError) as err:
        # One line, the API's own words (403: the Role lacks a right; 404: no such namespace).
        print(f"kto-power: error: {err}", file=sys.stderr)
        return EXIT_ERROR
