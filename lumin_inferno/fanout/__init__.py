"""Fan-out of independent work (ensemble members, chunks of toys) to a Dask cluster: a local one, an existing
scheduler, or a batch system through dask-jobqueue (docs/scale_out.md). Every finished unit is written to disk
atomically as it finishes, so a rerun of the same command resumes from it."""

from .cluster import connect
from .tasks import run_tasks
from .training import MemberTask, load_member, member_tasks, train_member_tasks, train_members

__all__ = ["connect", "train_members", "member_tasks", "train_member_tasks", "load_member", "MemberTask", "run_tasks"]
