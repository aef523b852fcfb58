"""Staged fine-tuning: a stage's keys laid over the run's config."""


def overlay(config, overrides):
  """`config` with a stage's `overrides` laid over it (and no stages of its own)."""
  merged = config.copy_and_resolve_references()
  with merged.unlocked():
    merged.stages = type(config.stages)()
    merged.update(overrides)
  return merged
