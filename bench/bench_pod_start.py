"""Pod start latency on the bed's real node: create -> Running for an image, cold (not on the node: pulled
from the bed's registry and unpacked) and warm (already on the node), a few pods each.

    .venv/bin/python bench/bench_pod_start.py [--image kto-trainer:0.1.0] [--pods 3] [--json out.json]

Needs the bed up (make bed). The pods only sleep; the namespace is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests.helpers` and the bed's package live at the repo root
    sys.path.insert(0, str(REPO))
from kto_bed import node  # noqa: E402
from kto_bed.paths import BedPaths  # noqa: E402

from tests.helpers import sleep_command, wait_for  # noqa: E402


def start_seconds(core: client.CoreV1Api, ns: str, name: str, image: str) -> float:
    """Seconds from the create call to the pod's phase Running, polled every 50 ms."""
    started = time.monotonic()
    core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": image, "command": sleep_command(600)}]}})
    wait_for(lambda: core.read_namespaced_pod(name, ns).status.phase == "Running", 900, f"{name} Running", 0.05)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="kto-trainer:0.1.0")
    parser.add_argument("--pods", type=int, default=3, help="pods per measurement (cold: one image drop each)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    paths = BedPaths.default()
    core = client.CoreV1Api(config.new_client_from_config(str(paths.kubeconfig)))
    ns = f"bench-start-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    wait_for(lambda: core.list_namespaced_service_account(ns).items, 30, "default ServiceAccount")
    cold, warm = [], []
    name = node.qualified(args.image)

    def users() -> list[str]:
        return [line for line in node.crictl(paths, "containers", "list").stdout.splitlines()
                if f" {name} " in f" {line} "]

    try:
        for i in range(args.pods):
            # Cold: the node forgets the image, layers and unpacked snapshots too (--sync: garbage-collected
            # before it returns; no pod uses it: the previous cold pod is deleted first).
            core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
            wait_for(lambda: not core.list_namespaced_pod(ns).items, 60, "pods gone")
            # A container (even an exited one) keeps the layers: the start would not be cold. The kubelet
            # removes a deleted pod's containers within seconds; other users make a cold start impossible.
            try:
                wait_for(lambda: not users(), 60, f"no container using {name}")
            except AssertionError:
                raise SystemExit(f"{len(users())} containers on the node use {name}: no cold start possible now") \
                    from None
            # Every name of that digest goes (the CRI also keeps it as repo@sha256:…), else nothing is collected.
            rows = [line.split() for line in node.crictl(paths, "images", "list").stdout.splitlines()[1:]]
            digest = next((row[2] for row in rows if row and row[0] == name), None)
            names = [row[0] for row in rows if len(row) > 2 and row[2] == digest]
            # Not on the node at all (a fresh bed whose node never ran it): the start is cold already.
            if digest is not None:
                removed = node.crictl(paths, "images", "rm", "--sync", *names)
                if removed.returncode != 0:
                    raise SystemExit(f"could not drop {args.image} from the node: {removed.stderr.strip()}")
            cold.append(start_seconds(core, ns, f"cold-{i}", args.image))
        for i in range(args.pods):
            warm.append(start_seconds(core, ns, f"warm-{i}", args.image))
    finally:
        core.delete_namespace(ns, grace_period_seconds=0)
    figures = {"image": args.image, "cold_s": [round(x, 2) for x in cold], "warm_s": [round(x, 2) for x in warm],
               "cold_median_s": round(statistics.median(cold), 2), "warm_median_s": round(statistics.median(warm), 2)}
    print(f"{args.image}: create -> Running cold {figures['cold_median_s']} s (median of {cold}), "
          f"warm {figures['warm_median_s']} s (median of {warm})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
