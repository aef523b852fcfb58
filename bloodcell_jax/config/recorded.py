"""A run's recorded config (config.json): read back in today's form, and its digest."""

import hashlib
import json


def upgrade_recorded(config: dict) -> dict:
  """A run's recorded config (config.json, a plain dict) in today's form: earlier versions
  kept the weight source under `model`, wrote per-parameter rules as strings and split the
  data by `seed`."""
  config = json.loads(json.dumps(config))
  config.setdefault("data", {}).setdefault("split_seed", config.get("seed", 0))
  config.setdefault("eval", {"tta": "", "report": True})
  model = config.get("model", {})
  legacy_init = {"init_from": "weights", "init_head": "head", "frozen_bn_mode": "frozen_bn_mode"}
  for old, new in legacy_init.items():
    if old in model:
      config.setdefault("init", {})[new] = model.pop(old)
  optim, loss = config.get("optim", {}), config.get("loss", {})
  if isinstance(optim.get("freeze"), str):
    rules = [r.strip() for r in optim["freeze"].split(",") if r.strip()]
    optim["freeze"] = rules + [".*=train"] * bool(rules)  # unmatched parameters trained
  if "weight_decay_pattern" in optim:
    optim["weight_decay_rules"] = [[optim.pop("weight_decay_pattern"), 1.0], [".*", 0.0]]
  if isinstance(loss.get("regularize"), str):
    loss["regularize"] = [[loss["regularize"], 1.0], [".*", 0.0]]
  return config


def config_digest(config) -> str:
  """A short hash of a resolved config: equal configs, equal digests."""
  canonical = json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
  return hashlib.sha1(canonical.encode()).hexdigest()[:16]
