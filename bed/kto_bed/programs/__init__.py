"""Local programs that stand in for platform images on the bed (see images.default.yaml)."""
