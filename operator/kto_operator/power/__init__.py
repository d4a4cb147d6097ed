"""Platform power: the PowerSchedule resource (Dailyclean's ON/OFF switch, aware of TrainingRuns).

Modules: `schedule` (the pure rule), `history` (events so far, from objects), `workloads` (selection and
sleep/wake patches on plain dicts), `reconcile` (one pass of the state machine, over kto_operator.api),
`gate` (what the TrainingRun handler asks), `settings`, `context` (kept in kopf's memo), `metrics`,
`handlers` (kopf).
"""
