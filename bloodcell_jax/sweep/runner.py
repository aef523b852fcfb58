"""A sweep file's runs, their configs and status, and the runs trained one per process; the
program is `bloodcell-sweep` (bloodcell_jax/cli/sweep.py).

  sweep = runner.load_sweep("configs/sweeps/study_ablations.py", {"num_epochs": 3})
  runner.print_runs(sweep, workdir)           # --list
  runner.run_index(sweep, k, workdir)         # --index=K: run K in this process
  failed = runner.run_all(sweep, workdir, 4)  # every other run, 4 child processes at a time
  runner.write_summaries(workdir)             # DIR/table.md, DIR/table.csv, DIR/report.html

Each run trains in DIR/<run name>/ through trainer.entry.train, and its results.json records
the sweep's name and the run's overrides. A run is finished when its results.json was written
by the same config (its digest); run_all skips those and the runs in use elsewhere, and the
others resume from their checkpoints, if any. A failed run does not stop the others: its
one-line error is recorded in DIR/<run>/failure.json.
"""

import dataclasses
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import List, Optional

from bloodcell_jax import atomic
from bloodcell_jax.config import recipes, recorded, schema
from bloodcell_jax.errors import UserError
from bloodcell_jax.results import table
from bloodcell_jax.sweep import hyper
from bloodcell_jax.trainer import entry
from bloodcell_jax.training import run_files
from bloodcell_jax.training import workdir as workdir_lib

_RUN_NAME = re.compile(r"^[A-Za-z0-9_.,=+-]+$")


@dataclasses.dataclass(frozen=True)
class SweepRun:
  """One run of a sweep: its number (as --list shows it), name and config overrides."""
  index: int
  name: str
  overrides: dict


def load_runs(sweep_file: str, seeds=None) -> List[SweepRun]:
  """The runs of a sweep file's `get_sweep()`, numbered in its order."""
  runs = recipes.call_file_function(sweep_file, "get_sweep", f"--config={sweep_file}")
  if isinstance(runs, list):
    runs = hyper.named(runs)
  if not isinstance(runs, dict) or not runs:
    raise UserError(f"--config={sweep_file}: get_sweep() must return {{run name: overrides}} "
                    "with at least one run")
  for name, overrides in runs.items():
    if not isinstance(name, str) or not _RUN_NAME.match(name):
      raise UserError(f"--config={sweep_file}: run name {name!r}: expected letters, digits "
                      "and _.,=+- (it names the run's directory)")
    if not isinstance(overrides, dict):
      raise UserError(f"--config={sweep_file}: run {name}: expected a dict of overrides, got "
                      f"{type(overrides).__name__}")
  if seeds:
    runs = hyper.reseeded(runs, seeds)
  return [SweepRun(i, name, overrides) for i, (name, overrides) in enumerate(runs.items())]


def apply_overrides(config, overrides: dict, where: str) -> None:
  """Sets each dotted `key: value` of `overrides` on `config` (locked: no new keys); an
  unknown key or a value of the wrong type is a UserError naming `where`."""
  config.lock()
  for key, value in overrides.items():
    try:
      config.update_from_flattened_dict({key: value})
    except (KeyError, AttributeError):
      close = ", ".join(recipes.close_keys(key, config))
      raise UserError(f"{where}: config.{key}: unknown config key"
                      + (f"; closest valid keys: {close}" if close else "")) from None
    except (TypeError, ValueError) as e:
      raise UserError(f"{where}: config.{key}={value!r}: {e}") from None


def run_config(sweep_file: str, run: SweepRun, command_line: dict):
  """The run's config: its recipe (or the sweep's get_config()), its overrides, then the
  command line's."""
  recipe = run.overrides.get(hyper.RECIPE_KEY)
  try:
    config = recipes.load_config_file(recipe or sweep_file)
  except UserError as e:
    if not recipe:
      raise
    raise UserError(f"{sweep_file}: run {run.name}: {hyper.RECIPE_KEY}={recipe}: "
                    f"{str(e).split(': ', 1)[-1]}") from None
  apply_overrides(config, {k: v for k, v in run.overrides.items() if k != hyper.RECIPE_KEY},
                  f"{sweep_file}: run {run.name}")
  apply_overrides(config, command_line, "command line")
  return config


def sweep_record(sweep_file: str, run: SweepRun, command_line: dict, config) -> dict:
  """What each run's results.json records of the sweep."""
  return {"name": os.path.splitext(os.path.basename(sweep_file))[0], "file": sweep_file,
          "run": run.name, "index": run.index, "group": hyper.group_of(run.name),
          "overrides": run.overrides, "command_line": command_line,
          "config_digest": recorded.config_digest(config)}


def status(run_dir: str, digest: str) -> str:
  """finished | running | failed | damaged | interrupted | pending. A run is finished when its
  results.json was written by this config and every file it left reads back (other settings:
  it resumes or re-evaluates; a damaged run is redone the same way)."""
  damaged = False
  try:
    results = run_files.read_json(os.path.join(run_dir, run_files.RESULTS)) or {}
    if (results.get("sweep") or {}).get("config_digest") == digest:
      table.check_predictions(run_dir, results)
      return "finished"
  except run_files.DamagedFile:
    damaged = True
  if workdir_lib.active_holder(run_dir):
    return "running"
  if damaged:
    return "damaged"
  if os.path.isfile(os.path.join(run_dir, run_files.FAILURE)):
    return "failed"
  if glob.glob(os.path.join(run_dir, "**", run_files.CHECKPOINTS_DIR, "latest", "*"),
               recursive=True):
    return "interrupted"
  return "pending"


def failure_line(run_dir: str) -> str:
  """The recorded error of a failed run ("" when none is recorded)."""
  try:
    return (run_files.read_json(os.path.join(run_dir, run_files.FAILURE)) or {}).get("error", "")
  except run_files.DamagedFile as e:
    return str(e)


def train_one(sweep_file: str, run: SweepRun, command_line: dict, workdir: str,
              processes: Optional[dict] = None) -> None:
  """Trains one run in `workdir`/<name> (this process); a failure is recorded, then raised."""
  config = run_config(sweep_file, run, command_line)
  run_dir = os.path.join(workdir, run.name)
  failure_path = os.path.join(run_dir, run_files.FAILURE)
  record = sweep_record(sweep_file, run, command_line, config)
  try:
    entry.train(config, run_dir, provenance=record, processes=processes)
  except Exception as e:  # pylint: disable=broad-except  (recorded for --list and the table)
    if not isinstance(e, UserError) or "in use by process" not in str(e):
      os.makedirs(run_dir, exist_ok=True)
      line = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
      atomic.write_json(failure_path, {"error": line.splitlines()[0] if line else "",
                                      "sweep": record, "time": time.strftime("%F %T")})
    raise
  if os.path.isfile(failure_path):
    os.remove(failure_path)


def command_line_overrides(argv) -> List[str]:
  """The `--config.key=value` arguments of `argv` (with a separate value, both)."""
  kept = []
  for i, arg in enumerate(argv):
    if arg.startswith("--config."):
      kept.append(arg)
      if "=" not in arg and i + 1 < len(argv):
        kept.append(argv[i + 1])
  return kept


def resource_slots(parallel: int) -> List[dict]:
  """For each of `parallel` concurrent runs: the CPU cores it is pinned to and the
  environment that gives it its share of the accelerators."""
  cores = sorted(os.sched_getaffinity(0))
  if parallel > len(cores):
    raise UserError(f"--parallel={parallel}: more runs than this machine's {len(cores)} cores")
  shares = [cores[i * len(cores) // parallel:(i + 1) * len(cores) // parallel]
            for i in range(parallel)]
  slots = [{"cpus": ",".join(map(str, share)), "env": {}} for share in shares]
  gpus = _visible_gpus()
  tpu_chips = len(glob.glob("/dev/accel*")) or len(glob.glob("/dev/vfio/[0-9]*"))
  if gpus:
    if parallel > len(gpus):
      raise UserError(f"--parallel={parallel}: more runs than the {len(gpus)} GPUs")
    for i, slot in enumerate(slots):
      share = gpus[i * len(gpus) // parallel:(i + 1) * len(gpus) // parallel]
      slot["env"] = {"CUDA_VISIBLE_DEVICES": ",".join(share)}
  elif tpu_chips and parallel > 1:
    if parallel != tpu_chips:
      raise UserError(f"--parallel={parallel}: on a TPU VM runs get one chip each; expected "
                      f"--parallel={tpu_chips} (or 1 for all chips in one run)")
    for i, slot in enumerate(slots):  # libtpu's variables for a process owning one chip
      slot["env"] = {"TPU_CHIPS_PER_PROCESS_BOUNDS": "1,1,1", "TPU_PROCESS_BOUNDS": "1,1,1",
                     "TPU_VISIBLE_CHIPS": str(i), "TPU_VISIBLE_DEVICES": str(i),
                     "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{8476 + i}",
                     "TPU_MESH_CONTROLLER_PORT": str(8476 + i)}
  return slots


def _visible_gpus() -> List[str]:
  """The GPUs this process may use: CUDA_VISIBLE_DEVICES, else every /dev/nvidiaN."""
  if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
    return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
  return sorted((os.path.basename(p)[len("nvidia"):] for p in glob.glob("/dev/nvidia[0-9]*")),
                key=int)


def parse_cpus(spec: str) -> set:
  """The CPU cores of a --cpus value: numbers and ranges, e.g. "0-3" or "0,2"."""
  try:
    cores = set()
    for part in spec.split(","):
      low, _, high = part.partition("-")
      cores.update(range(int(low), int(high or low) + 1))
    return cores
  except ValueError:
    raise UserError(f"--cpus={spec}: expected core numbers and ranges, e.g. 0-3 or 0,2") from None


class _Runner:
  """Starts each pending run as a child process (`--index=K`) in a free slot; forwards
  SIGTERM to the children, which save and exit to be resumed."""

  def __init__(self, digests, workdir, child_args, slots):
    self.digests, self.workdir, self.child_args, self.slots = digests, workdir, child_args, slots
    self.active = {}  # slot index -> (run, process, start time, log file)
    self.failed, self.stopping = [], False

  def run(self, todo: List[SweepRun]) -> None:
    """Runs `todo` in order, as slots free up, until all have ended (or SIGTERM came)."""
    previous = signal.signal(signal.SIGTERM, self._stop)
    try:
      while todo or self.active:
        free = [i for i in range(len(self.slots)) if i not in self.active]
        while todo and free and not self.stopping:
          self._start(todo.pop(0), free.pop(0))
        time.sleep(0.2)
        for slot, (run, process, started, log) in list(self.active.items()):
          if process.poll() is not None:
            log.close()
            del self.active[slot]
            self._finished(run, process.returncode, time.time() - started)
        if self.stopping:
          todo = []
    finally:
      signal.signal(signal.SIGTERM, previous)

  def _stop(self, signum, frame):
    """SIGTERM: starts nothing more and passes the signal on to the running children."""
    del frame
    self.stopping = True
    print("SIGTERM: asking the running runs to save and stop", flush=True)
    for _, process, _, _ in self.active.values():
      process.send_signal(signum)

  def _start(self, run: SweepRun, slot: int) -> None:
    """Starts `run` as a child process in `slot`, its output appended to the run's log."""
    run_dir = os.path.join(self.workdir, run.name)
    if workdir_lib.active_holder(run_dir):  # another sweep process took it meanwhile
      print(f"[{run.index}] {run.name}: running elsewhere, skipped", flush=True)
      return
    os.makedirs(run_dir, exist_ok=True)
    log = open(os.path.join(run_dir, run_files.RUN_LOG), "a")
    log.write(f"\n==== {time.strftime('%F %T')}: sweep run {run.index} ({run.name})\n")
    log.flush()
    command = [sys.executable, "-m", "bloodcell_jax.cli.sweep", *self.child_args,
               f"--index={run.index}", "--nosummaries"]
    if len(self.slots) > 1:
      command.append(f"--cpus={self.slots[slot]['cpus']}")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **self.slots[slot]["env"]})
    self.active[slot] = (run, process, time.time(), log)
    where = f" on cores {self.slots[slot]['cpus']}" if len(self.slots) > 1 else ""
    print(f"[{run.index}] {run.name}: started{where} (log: {log.name})", flush=True)

  def _finished(self, run: SweepRun, returncode: int, seconds: float) -> None:
    """Reports how a child ended; records a failure the child could not record itself."""
    run_dir = os.path.join(self.workdir, run.name)
    state = status(run_dir, self.digests[run.name])
    took = f"{seconds / 60:.1f} min"
    if state == "finished":
      results = run_files.read_json(os.path.join(run_dir, run_files.RESULTS))
      metric = results.get("val_accuracy")
      shown = f", val_accuracy {metric:.4f}" if isinstance(metric, float) else ""
      print(f"[{run.index}] {run.name}: finished in {took}{shown}", flush=True)
      return
    if state == "running":  # another sweep process took the run first; its child was refused
      print(f"[{run.index}] {run.name}: being trained by another process "
            f"({workdir_lib.active_holder(run_dir).get('pid')}), skipped", flush=True)
      return
    if returncode == 0:  # saved on SIGTERM
      print(f"[{run.index}] {run.name}: interrupted after {took}; rerun to resume", flush=True)
      return
    if not failure_line(run_dir):  # died without a word: a crash or a kill
      how = (f"killed by signal {-returncode}" if returncode < 0
             else f"exit code {returncode}")
      atomic.write_json(os.path.join(run_dir, run_files.FAILURE),
                       {"error": f"{how}; see {os.path.join(run_dir, run_files.RUN_LOG)}",
                        "time": time.strftime("%F %T")})
    self.failed.append(run.name)
    print(f"[{run.index}] {run.name}: FAILED after {took}: {failure_line(run_dir)}", flush=True)


def write_summaries(workdir: str) -> None:
  """DIR/table.md and DIR/table.csv of every run in `workdir` (results.table), and the
  sweep's DIR/report.html (results.report)."""
  from bloodcell_jax.results import report  # pylint: disable=g-import-not-at-top  (matplotlib, jinja2)
  results_table = table.write(workdir)
  report.write_sweep_report(workdir, results_table)
  print(f"wrote {os.path.join(workdir, 'table.md')} ({len(results_table.rows)} rows) and "
        f"{os.path.join(workdir, run_files.REPORT)}")


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A sweep file's runs with their configs, checked before any of them starts."""
  file: str
  runs: List[SweepRun]
  command_line: dict  # overrides for every run
  seeds: Optional[int]
  digests: dict  # run name -> config digest

  def status(self, workdir: str, run: SweepRun) -> str:
    """The run's `status` in `workdir`, against the config it has now."""
    return status(os.path.join(workdir, run.name), self.digests[run.name])


def load_sweep(sweep_file: str, command_line: dict, seeds: Optional[int] = None) -> Sweep:
  """The sweep's runs and their configs; the first run whose config breaks a rule is an
  error naming it."""
  runs = load_runs(sweep_file, seeds)
  digests = {}
  for run in runs:
    config = run_config(sweep_file, run, command_line)
    try:
      schema.validate(config)
    except UserError as e:
      raise UserError(f"{sweep_file}: run {run.name}: {e}") from None
    digests[run.name] = recorded.config_digest(config)
  return Sweep(sweep_file, runs, command_line, seeds, digests)


def print_runs(sweep: Sweep, workdir: str) -> None:
  """--list: every run with its status and overrides (and the error of a failed run)."""
  print(f"{len(sweep.runs)} runs of {sweep.file} in {workdir}:")
  width = max(len(r.name) for r in sweep.runs)
  for run in sweep.runs:
    state = sweep.status(workdir, run)
    error = f"  error: {failure_line(os.path.join(workdir, run.name))}" if state == "failed" else ""
    print(f"{run.index:4d}  {run.name:<{width}}  {state:<11}  "
          f"{json.dumps(run.overrides, sort_keys=True)}{error}")


def run_index(sweep: Sweep, index: int, workdir: str, processes: Optional[dict] = None) -> None:
  """--index=K: trains run K in this process unless it is finished (`processes`: see
  trainer.entry.train)."""
  if not 0 <= index < len(sweep.runs):
    raise UserError(f"--index={index}: expected 0 to {len(sweep.runs) - 1} (see --list)")
  run = sweep.runs[index]
  state = sweep.status(workdir, run)
  print(f"run {run.index}: {run.name} ({state})", flush=True)
  if state != "finished":
    train_one(sweep.file, run, sweep.command_line, workdir, processes)


def run_all(sweep: Sweep, workdir: str, parallel: int, extra_args=()) -> List[str]:
  """Every run that is neither finished nor running elsewhere, `parallel` at a time, each in
  a child process; returns the names of the runs that failed."""
  os.makedirs(workdir, exist_ok=True)
  atomic.write_json(os.path.join(workdir, run_files.SWEEP_RECORD), {
      "file": sweep.file, "command_line": sweep.command_line, "seeds": sweep.seeds,
      "runs": [{"index": r.index, "name": r.name, "group": hyper.group_of(r.name),
                "overrides": r.overrides} for r in sweep.runs]})
  todo = []
  for run in sweep.runs:
    state = sweep.status(workdir, run)
    if state in ("finished", "running"):
      print(f"[{run.index}] {run.name}: {state}, skipped", flush=True)
    else:
      todo.append(run)
  child_args = [f"--config={sweep.file}", f"--workdir={workdir}",
                *([f"--seeds={sweep.seeds}"] if sweep.seeds else []), *extra_args]
  runner = _Runner(sweep.digests, workdir, child_args,
                   resource_slots(min(parallel, max(len(todo), 1))))
  runner.run(todo)
  return runner.failed
