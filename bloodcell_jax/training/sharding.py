"""The device mesh and how batches and state are laid out on it.

One code path for one CPU, eight GPUs or a TPU pod: the batch is split over a
'data' axis that spans every device of every process; state is replicated.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bloodcell_jax.errors import UserError


def make_mesh() -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def global_batch(local_batch: dict, mesh) -> dict:
  """Assembles this process's slice into arrays spanning all processes."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


def check_batch_size(batch_size: int, what: str = "config.batch_size",
                     micro_batches: int = 1) -> None:
  """Every device gets an equal share of the batch, and of each of its micro-batches."""
  devices, processes = jax.device_count(), jax.process_count()
  if batch_size % devices or batch_size % processes:
    raise UserError(f"{what}={batch_size}: must be divisible by the number of devices "
                    f"({devices}) and processes ({processes})")
  if micro_batches < 1:
    raise UserError(f"config.grad_accum_steps={micro_batches}: expected 1 or more")
  if batch_size % (devices * micro_batches):
    raise UserError(f"{what}={batch_size}: with config.grad_accum_steps={micro_batches} it must "
                    f"be divisible by {micro_batches} x the number of devices ({devices})")
