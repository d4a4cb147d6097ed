"""Platform power: the PowerSchedule resource (Dailyclean's ON/OFF switch, aware of TrainingRuns).

Modules: `schedule` (the pure rule), `history` (events so far, from objects), `workloads` (selection and
sleep/wake patches on plain dicts), `kube` (API layer), `reconcile` (one pass of the state machine),
`gate` (what the TrainingRun handler asks), `settings`, `context` (kept in kopf's memo), `metrics`,
`handlers` (kopf).
"""
