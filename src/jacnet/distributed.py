"""Data-parallel training: the sums that training needs, combined over processes.

Every quantity jacnet's training uses is a sum over samples — the gradient, JᵀJ and
Jᵀe, the Gauss–Newton product G·v, the loss and the metrics' running totals. In a
data-parallel run each process (*rank*) holds a shard of the rows, computes its part
of each sum, and one ``Allreduce`` adds the parts; every rank then holds the same
numbers and takes the same step. A :class:`Communicator` is what the training loop
needs of the processes: their number and this one's index, an in-place sum of a flat
array, a sum of a scalar, a broadcast and a way to stop them all.

:func:`world` gives the communicator of the running job: under ``mpiexec`` with more
than one process, an :class:`MPICommunicator` over mpi4py's ``COMM_WORLD`` (mpi4py is
imported only then: ``pip install 'jacnet[mpi]'`` brings it and the mpich wheel, whose
``mpiexec`` needs no system MPI; a system MPI works too); otherwise the
:class:`SingleProcess` communicator, whose sums are the identity. Pass it to
:func:`jacnet.training.fit` as ``comm=``, with each rank's shard of the rows.

Examples
--------
>>> comm = world()  # not under mpiexec: one process
>>> comm.size, comm.rank
(1, 0)
>>> comm.allreduce(np.array([1.0, 2.0]))
array([1., 2.])
>>> shard_rows(10, comm.rank, comm.size)
slice(0, 10, None)
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["Communicator", "MPICommunicator", "SingleProcess", "shard_rows", "world"]

#: Environment variables that MPI launchers set in every process they start (MPICH's
#: Hydra and PMI, Open MPI, PMIx, Slurm's srun): the job's size.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class Communicator:
    """What a data-parallel run needs of its processes.

    Attributes
    ----------
    size : int
        Number of processes (ranks).
    rank : int
        This process's index, 0 … size − 1; rank 0 writes the files and shows progress.
    """

    size: int = 1
    rank: int = 0

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        """Sum the contiguous ``array`` over every rank, in place (its dtype kept); return it."""
        raise NotImplementedError

    def allreduce_scalar(self, value: float) -> float:
        """The sum of ``value`` over every rank (a Python float)."""
        buffer = np.array([value], dtype=np.float64)
        return float(self.allreduce(buffer)[0])

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite the contiguous ``array`` with rank ``root``'s, in place; return it."""
        raise NotImplementedError

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a small picklable object), in rank order."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (after a failure that the others cannot see)."""
        raise NotImplementedError

    @contextmanager
    def failing_together(self) -> Iterator[None]:
        """Run a block in which an error on one rank must stop every rank.

        A rank that raises would leave the others waiting forever in their next
        collective operation; inside this block it prints its error, naming the rank,
        and aborts the whole job instead. With one process the error simply propagates.
        """
        try:
            yield
        except BaseException as error:
            if self.size == 1:
                raise
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            print(f"jacnet: rank {self.rank} of {self.size} failed, stopping every rank:\n"
                  f"{detail}", file=sys.stderr, flush=True)
            self.abort(1)
            raise  # pragma: no cover  (abort does not return)

    def agree(self, error: BaseException | None) -> None:
        """Raise on every rank if ``error`` happened on any (a collective check).

        Each rank passes the exception it caught (or None); the rank that failed raises its
        own error, the others a ``RuntimeError`` naming the failed ranks — so a bad shard
        found while checking the data stops every rank with an exception, not a hang.
        """
        failed = np.zeros(self.size, dtype=np.float64)
        failed[self.rank] = error is not None
        self.allreduce(failed)
        if error is not None:
            raise error
        if failed.any():
            ranks = ", ".join(str(r) for r in np.flatnonzero(failed))
            raise RuntimeError(
                f"rank(s) {ranks} of {self.size} failed (see their error); every rank stops."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, rank={self.rank})"


class SingleProcess(Communicator):
    """One process: every sum over ranks is the value itself (the default).

    >>> SingleProcess().allreduce_scalar(2.5)
    2.5
    """

    size = 1
    rank = 0

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        return array

    def allreduce_scalar(self, value: float) -> float:
        return float(value)

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        return array

    def allgather(self, value: Any) -> list[Any]:
        return [value]

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class MPICommunicator(Communicator):
    """An mpi4py communicator (default: ``COMM_WORLD``).

    ``allreduce`` is ``Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)`` on the array's own
    buffer: float32 stays float32, no copy is made.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
    """

    def __init__(self, comm: Any = None) -> None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError(
                "data-parallel training needs mpi4py: pip install 'jacnet[mpi]' (mpi4py and "
                "the mpich wheel, which provides mpiexec), or mpi4py built for your MPI."
            ) from None
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.size = int(self.comm.Get_size())
        self.rank = int(self.comm.Get_rank())

    def allreduce(self, array: np.ndarray) -> np.ndarray:
        if not array.flags.c_contiguous:
            raise ValueError("allreduce needs a contiguous array (it sums in place); got a "
                             "strided view: pass np.ascontiguousarray(array) and use the result.")
        if self.size > 1:
            self.comm.Allreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)
        return array

    def allreduce_scalar(self, value: float) -> float:
        return float(self.comm.allreduce(float(value), op=self._MPI.SUM))

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        if self.size > 1:
            self.comm.Bcast(array, root=root)
        return array

    def allgather(self, value: Any) -> list[Any]:
        return list(self.comm.allgather(value))

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def _launched_size() -> int:
    """The job size an MPI launcher announced in the environment (1 if none)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def world() -> Communicator:
    """The communicator of this job: MPI's world under ``mpiexec -n k`` (k > 1), else one process.

    mpi4py is imported only when a launcher started more than one process, so a plain
    ``python`` run never loads MPI.
    """
    if _launched_size() > 1:
        return MPICommunicator()
    return SingleProcess()


def shard_rows(n_rows: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous block of ``n_rows`` rows out of ``size``: sizes differ by at most one.

    Rank r gets rows ``[r·N // k, (r+1)·N // k)``; concatenated in rank order the
    blocks are the rows in their original order, which is how
    :func:`jacnet.training.fit` numbers the rows of a sharded run.

    >>> [shard_rows(10, rank, 3) for rank in range(3)]
    [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
    """
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, size={size}); got rank={rank}.")
    return slice(rank * n_rows // size, (rank + 1) * n_rows // size)
