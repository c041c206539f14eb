//! [`Collective`] on MPI (rsmpi): the world communicator of the job `mpirun`/`srun` started.

use super::Collective;
use anyhow::{bail, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use std::sync::Mutex;

/// The world communicator. MPI runs at `MPI_THREAD_SERIALIZED`: any thread may call it, never
/// two at once, which the mutex ensures.
pub struct Mpi {
    comm: Mutex<Comm>,
    rank: usize,
    size: usize,
}

struct Comm(SimpleCommunicator);

// SAFETY: under MPI_THREAD_SERIALIZED (checked in `init`) MPI may be called from any thread as
// long as calls do not overlap; every call goes through `Mpi::comm`'s mutex.
unsafe impl Send for Comm {}

impl Mpi {
    /// Initialises MPI; returns the universe (finalises MPI when dropped) and the world.
    pub fn init() -> Result<(Universe, Mpi)> {
        let Some((universe, level)) = mpi::initialize_with_threading(Threading::Serialized) else {
            bail!("MPI was initialised twice");
        };
        if level < Threading::Serialized {
            bail!("the MPI library offers thread level {level:?}; fewstep needs Serialized");
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok((
            universe,
            Mpi {
                comm: Mutex::new(Comm(world)),
                rank,
                size,
            },
        ))
    }

    fn with<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        f(&comm.0)
    }

    /// Each rank's count of `n` elements, known on every rank (an all-gather of one integer).
    fn counts(&self, n: usize) -> Vec<i32> {
        let n = i32::try_from(n).expect("a gathered part holds fewer than 2^31 elements");
        let mut all = vec![0i32; self.size];
        self.with(|c| c.all_gather_into(&n, &mut all[..]));
        all
    }
}

impl Mpi {
    /// Every rank's `part` concatenated in rank order at rank 0 (`MPI_Gatherv`).
    fn gather<T: Equivalence + Copy + Default>(&self, part: &[T]) -> Option<Vec<T>> {
        let counts = self.counts(part.len());
        self.with(|c| {
            let p = c.process_at_rank(0);
            if self.rank == 0 {
                let displs = displacements(&counts);
                let total = counts.iter().map(|&n| n as usize).sum();
                let mut all = vec![T::default(); total];
                let mut into = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
                p.gather_varcount_into_root(part, &mut into);
                Some(all)
            } else {
                p.gather_varcount_into(part);
                None
            }
        })
    }
}

fn displacements(counts: &[i32]) -> Vec<i32> {
    counts
        .iter()
        .scan(0i32, |at, &c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect()
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) {
        let send = buf.to_vec();
        self.with(|c| c.all_reduce_into(&send[..], buf, SystemOperation::sum()));
    }

    fn gather_to_root(&self, part: &[f32]) -> Option<Vec<f32>> {
        self.gather(part)
    }

    fn gather_f64_to_root(&self, part: &[f64]) -> Option<Vec<f64>> {
        self.gather(part)
    }

    fn reduce_sum_to_root(&self, part: &[f64]) -> Option<Vec<f64>> {
        self.with(|c| {
            let p = c.process_at_rank(0);
            if self.rank == 0 {
                let mut sum = vec![0.0f64; part.len()];
                p.reduce_into_root(part, &mut sum[..], SystemOperation::sum());
                Some(sum)
            } else {
                p.reduce_into(part, SystemOperation::sum());
                None
            }
        })
    }

    fn barrier(&self) {
        self.with(|c| c.barrier());
    }

    fn abort(&self, code: i32) -> ! {
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        comm.0.abort(code)
    }
}
