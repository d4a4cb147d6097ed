"""A tiny real trainer for operator tests: continues the MLflow run named by MLFLOW_RUN_ID, logs params and
per-epoch metrics (loss, accuracy) with step=epoch like Keras autolog, prints log lines, and can fail,
exit with a code, use memory (OOM tests) or leave its run RUNNING.

    python -m kto_bed.standin_trainer --epochs=3 --sleep=0.5 [--fail_at_epoch=2 --exit_code=3]
        [--alloc_mb=256] [--test_accuracy=0.91] [--log_model[=true]] [--leave_running[=true]]

Unknown `--key=value` arguments (the TrainingRun's other parameters) are accepted and ignored.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

PAGE = 4096


def _flag(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="standin_trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs to 'train'")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds per epoch")
    parser.add_argument("--fail_at_epoch", type=int, default=0, help="1-based epoch at which to fail (0: never)")
    parser.add_argument("--exit_code", type=int, default=None,
                        help="exit code of the failure (default 1), or the final exit code without --fail_at_epoch")
    parser.add_argument("--alloc_mb", type=int, default=0, help="MiB of memory to allocate and touch first")
    parser.add_argument("--test_accuracy", type=float, default=None, help="final metric test_accuracy to log")
    # Flags also take a value: the operator renders boolean parameters as --key=true / --key=false.
    parser.add_argument("--log_model", type=_flag, nargs="?", const=True, default=False,
                        help="log a tiny 'model/MLmodel' artifact")
    parser.add_argument("--leave_running", type=_flag, nargs="?", const=True, default=False,
                        help="never set the run's final status")
    return parser.parse_known_args(argv)


def allocate(megabytes: int) -> bytearray:
    """Allocate and touch every page, so the memory is resident (what a memory limit counts)."""
    buffer = bytearray(megabytes * 1024 * 1024)
    for offset in range(0, len(buffer), PAGE):
        buffer[offset] = 1
    return buffer


def _say(text: str, *, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _log_missing_params(run_id: str, params: dict[str, str]) -> None:
    """Log only params the run lacks, as kto-trainer does: the operator logs the TrainingRun's parameters too,
    possibly at the same moment, and MLflow refuses a param logged twice with different text; a refused
    write means the operator was first (its values stand), so what is still missing is logged again."""
    import mlflow
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    for attempt in range(1, 4):
        existing = client.get_run(run_id).data.params
        missing = [Param(k, v) for k, v in params.items() if k not in existing]
        try:
            if missing:
                client.log_batch(run_id, params=missing)
            return
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE" or attempt == 3:
                raise


def _terminated(signum: int, _frame: object) -> None:
    # As a container's PID 1 the default action of SIGTERM is to ignore it: die like a killed process, without
    # the exit handlers (MLflow's would close the run FINISHED; a killed trainer leaves that to the operator).
    sys.stdout.flush()
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    import mlflow

    _say(f"standin trainer: epochs={args.epochs} sleep={args.sleep} run={os.environ.get('MLFLOW_RUN_ID', '-')}")
    if extra:
        _say(f"ignoring parameters: {' '.join(extra)}")
    hold = allocate(args.alloc_mb) if args.alloc_mb else None
    if hold is not None:
        _say(f"allocated {args.alloc_mb} MiB")
    run = mlflow.start_run()  # continues MLFLOW_RUN_ID when set
    run_id = run.info.run_id
    _log_missing_params(run_id, {"epochs": str(args.epochs), "sleep": str(args.sleep)})
    code = 0
    for epoch in range(args.epochs):
        time.sleep(args.sleep)
        loss = 1.0 / (epoch + 2)
        accuracy = 1.0 - loss / 2
        mlflow.log_metrics({"loss": loss, "accuracy": accuracy}, step=epoch)
        _say(f"epoch {epoch + 1}/{args.epochs} loss={loss:.4f} accuracy={accuracy:.4f}")
        if args.fail_at_epoch and epoch + 1 == args.fail_at_epoch:
            code = 1 if args.exit_code is None else args.exit_code
            _say(f"ERROR: simulated failure at epoch {epoch + 1} (exit code {code})", err=True)
            break
    else:
        if args.test_accuracy is not None:
            mlflow.log_metric("test_accuracy", args.test_accuracy)
            _say(f"test_accuracy={args.test_accuracy}")
        if args.log_model:
            mlflow.log_text("artifact_path: model\nflavors: {}\n", "model/MLmodel")
            _say("model logged")
        code = args.exit_code or 0
    if args.leave_running:
        _say("leaving the run RUNNING")
        sys.stdout.flush()
        os._exit(code)
    mlflow.end_run("FINISHED" if code == 0 else "FAILED")
    _say(f"done, exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
