//! [`Threads`]: a [`Collective`] of N ranks that are threads of one process, so sharded code
//! runs at several ranks in unit tests without an MPI launcher. Each collective exchanges
//! through shared slots between two barriers; sums are taken in rank order, as MPI's are not
//! guaranteed to be (tests comparing with MPI allow for reduction order anyway).

use super::Collective;
use std::sync::{Arc, Barrier, Mutex};

/// One rank of a world of threads: [`Threads::run`] starts them all.
pub struct Threads {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    barrier: Barrier,
    /// Each rank's contribution to the collective in progress.
    slots: Mutex<Vec<Vec<f64>>>,
}

impl Threads {
    /// Runs `f` on `size` ranks, one thread each; returns their results in rank order.
    pub fn run<T: Send>(size: usize, f: impl Fn(&Threads) -> T + Sync) -> Vec<T> {
        assert!(size > 0, "a world has at least one rank");
        let shared = Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
        });
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..size)
                .map(|rank| {
                    let world = Threads {
                        rank,
                        shared: shared.clone(),
                    };
                    let f = &f;
                    s.spawn(move || f(&world))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a rank panicked"))
                .collect()
        })
    }

    /// Every rank's `part` (as f64), in rank order, on every rank.
    fn exchange(&self, part: Vec<f64>) -> Vec<Vec<f64>> {
        self.slots()[self.rank] = part;
        self.shared.barrier.wait();
        let all = self.slots().clone();
        // No rank writes the next collective's part before every rank has read this one's.
        self.shared.barrier.wait();
        all
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f64>>> {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn sum(parts: &[Vec<f64>]) -> Vec<f64> {
    let mut total = vec![0.0; parts[0].len()];
    for p in parts {
        assert_eq!(
            p.len(),
            total.len(),
            "ranks reduced buffers of different lengths"
        );
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        // Carried as f64 (exact), summed in f32 in rank order as an f32 reduction would.
        let all = self.exchange(buf.iter().map(|&v| f64::from(v)).collect());
        let mut total = vec![0f32; buf.len()];
        for p in &all {
            total.iter_mut().zip(p).for_each(|(t, &v)| *t += v as f32);
        }
        buf.copy_from_slice(&total);
    }
    fn gather_to_root(&self, part: &[f32]) -> Option<Vec<f32>> {
        let all = self.exchange(part.iter().map(|&v| f64::from(v)).collect());
        self.is_root()
            .then(|| all.concat().into_iter().map(|v| v as f32).collect())
    }
    fn gather_f64_to_root(&self, part: &[f64]) -> Option<Vec<f64>> {
        let all = self.exchange(part.to_vec());
        self.is_root().then(|| all.concat())
    }
    fn reduce_sum_to_root(&self, part: &[f64]) -> Option<Vec<f64>> {
        let all = self.exchange(part.to_vec());
        self.is_root().then(|| sum(&all))
    }
    fn barrier(&self) {
        self.shared.barrier.wait();
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectives_of_threads_combine_in_rank_order() {
        let out = Threads::run(3, |w| {
            let r = w.rank() as f32;
            let mut buf = vec![r, 1.0];
            w.all_reduce_sum(&mut buf);
            let gathered = w.gather_f64_to_root(&vec![f64::from(r); w.rank() + 1]);
            let reduced = w.reduce_sum_to_root(&[f64::from(r) * 2.0]);
            w.barrier();
            (buf, gathered, reduced)
        });
        for (rank, (buf, gathered, reduced)) in out.into_iter().enumerate() {
            assert_eq!(buf, [3.0, 3.0]);
            match rank {
                0 => {
                    assert_eq!(gathered.unwrap(), [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
                    assert_eq!(reduced.unwrap(), [6.0]);
                }
                _ => assert!(gathered.is_none() && reduced.is_none()),
            }
        }
    }
}
