"""The web console: the platform's ON/OFF button and the TrainingRuns at a glance, served by the operator and
acting with each signed-in user's own token (the API server's RBAC decides what they see and may do)."""
