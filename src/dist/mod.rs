//! The processes of one job: a [`Collective`] the trainer and the sampler talk through, so a
//! single process and an `mpirun -np N` job share one code path (docs/distributed.md).
//!
//! Without the `mpi` feature, or outside an MPI launcher, [`world`] is [`Single`]: rank 0 of 1,
//! every collective a no-op. With the feature, [`init`] (called once by the command line) joins
//! the job that `mpirun`/`srun` started, and [`world`] is then its MPI world communicator.
//! [`Threads`] stands in for such a job inside one process, so unit tests run sharded code at
//! several ranks without a launcher.

#[cfg(feature = "mpi")]
mod mpi;
mod threads;

pub use threads::Threads;

use anyhow::Result;
use std::ops::Range;
use std::sync::OnceLock;

/// The few collective operations data-parallel training and sharded sampling need. Every rank
/// must call each operation in the same order (they block until all ranks arrive).
pub trait Collective: Send + Sync {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank by the element-wise sum of all ranks' `buf`s: one call for
    /// one flat buffer.
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// The concatenation of every rank's `part`, in rank order, at rank 0 (`None` elsewhere).
    /// Parts may differ in length.
    fn gather_to_root(&self, part: &[f32]) -> Option<Vec<f32>>;
    /// [`Collective::gather_to_root`] of f64 values.
    fn gather_f64_to_root(&self, part: &[f64]) -> Option<Vec<f64>>;
    /// The element-wise sum of every rank's `part` at rank 0 (`None` elsewhere), in f64.
    fn reduce_sum_to_root(&self, part: &[f64]) -> Option<Vec<f64>>;
    /// Waits until every rank has arrived.
    fn barrier(&self);
    /// Ends every process of the job with `code` (a failed rank must not leave the others
    /// waiting in a collective).
    fn abort(&self, code: i32) -> !;

    /// Rank 0 writes the job's files and prints its results.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process alone: rank 0 of 1.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) {}
    fn gather_to_root(&self, part: &[f32]) -> Option<Vec<f32>> {
        Some(part.to_vec())
    }
    fn gather_f64_to_root(&self, part: &[f64]) -> Option<Vec<f64>> {
        Some(part.to_vec())
    }
    fn reduce_sum_to_root(&self, part: &[f64]) -> Option<Vec<f64>> {
        Some(part.to_vec())
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();

/// The job's processes: the MPI world after [`init`] joined one, else [`Single`].
pub fn world() -> &'static dyn Collective {
    WORLD.get_or_init(|| Box::new(Single)).as_ref()
}

/// Rank `rank`'s rows of `n` split over `size` ranks: contiguous, in rank order, the first
/// `n % size` ranks one row more. Sharded work covers `0..n` exactly once.
pub fn share(n: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// The size an MPI launcher (`mpirun`, `srun`) announces to the processes it starts, if any.
pub fn launcher_size() -> Option<(String, usize)> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .find_map(|k| {
        let v = std::env::var(k).ok()?.parse().ok()?;
        Some((k.to_string(), v))
    })
}

/// Holds the MPI library open while the command runs; dropping it finalises MPI.
pub struct Session {
    #[cfg(feature = "mpi")]
    _universe: Option<::mpi::environment::Universe>,
}

/// Joins the MPI job this process was launched into (the `mpi` feature, under a launcher), or
/// stays a single process. Call once, before any [`world`] use, and keep the [`Session`].
/// Under a launcher of several processes without the feature it refuses: every rank would run
/// the whole job and write the same files.
pub fn init() -> Result<Session> {
    #[cfg(feature = "mpi")]
    {
        let universe = match launcher_size() {
            Some(_) => {
                let (universe, comm) = mpi::Mpi::init()?;
                if WORLD.set(Box::new(comm)).is_err() {
                    anyhow::bail!("dist::init was called after dist::world");
                }
                Some(universe)
            }
            None => None,
        };
        Ok(Session {
            _universe: universe,
        })
    }
    #[cfg(not(feature = "mpi"))]
    {
        if let Some((var, n)) = launcher_size().filter(|(_, n)| *n > 1) {
            anyhow::bail!(
                "this fewstep was built without the `mpi` feature but runs as one of {n} \
                 processes ({var}={n}): each would run the whole job and write the same files; \
                 rebuild with `cargo build --release --features mpi` (docs/distributed.md)"
            );
        }
        Ok(Session {})
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_cover_the_rows_once_in_order() {
        for n in [0, 1, 5, 64, 1001] {
            for size in 1..6 {
                let parts: Vec<_> = (0..size).map(|r| share(n, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1);
                }
            }
        }
    }
}
