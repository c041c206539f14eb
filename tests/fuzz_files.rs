//! Damaged files never crash the process (issue 20): seeded byte-flipped copies of a small
//! dataset, a samples file, a checkpoint and an `.npy` array, plus a file known to have crashed
//! Debian 12's libhdf5 1.10.8 (`tests/fixtures/corrupt-heap.h5`: a ring8 dataset with random
//! bytes changed, whose `/data` attribute `source` points into a damaged heap), are read by every
//! command that opens such a file. Each command runs in a child process, so that a crash is observed rather than
//! fatal: every run must end with exit code 0 or with fewstep's clean error (exit code 1, an
//! `error: ` line, no panic), never with a signal or a panic's 101.

mod common;

use common::ok;
use rand::{Rng, RngCore};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The seed of the byte flips; a failure names the copy, which this seed makes again.
const SEED: u64 = 20;
/// A child that takes longer than this is counted as hung.
const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// The binary under test; `FEWSTEP_FUZZ_BIN` points the runs at another build (e.g. one linked
/// against Debian 12's libhdf5, which crashes here) to see the test fail.
fn binary() -> PathBuf {
    std::env::var_os("FEWSTEP_FUZZ_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fewstep")))
}

/// `count` copies of `file`, each with 1-64 bytes at random offsets set to random values.
fn flipped_copies(file: &Path, dir: &Path, count: usize, rng: &mut impl RngCore) -> Vec<PathBuf> {
    let bytes = std::fs::read(file).unwrap();
    let stem = file.file_stem().unwrap().to_str().unwrap();
    let ext = file.extension().unwrap().to_str().unwrap();
    (0..count)
        .map(|i| {
            let mut b = bytes.clone();
            for _ in 0..rng.gen_range(1..=64) {
                let at = rng.gen_range(0..b.len());
                // XOR with a non-zero value: the byte always changes.
                b[at] ^= rng.gen_range(1..=255u8);
            }
            let path = dir.join(format!("{stem}-{i:03}.{ext}"));
            std::fs::write(&path, &b).unwrap();
            path
        })
        .collect()
}

/// How one run ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Success,
    CleanError,
    /// Anything else: a signal, a panic, an unexpected exit code, a hang.
    Bad(String),
}

fn run(args: &[String], scratch: &Path) -> Outcome {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fewstep");
    // Drain stderr on a thread so that a chatty child cannot block on a full pipe.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut s).ok();
        s
    });
    let start = Instant::now();
    let status: ExitStatus = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > CHILD_LIMIT {
            child.kill().ok();
            child.wait().ok();
            return Outcome::Bad(format!("still running after {CHILD_LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = reader.join().unwrap();
    let first = stderr.lines().find(|l| l.starts_with("error: "));
    match status.code() {
        Some(0) => Outcome::Success,
        Some(1) if first.is_some() && !stderr.contains("panicked") => Outcome::CleanError,
        Some(c) => Outcome::Bad(format!("exit code {c}: {stderr}")),
        None => {
            use std::os::unix::process::ExitStatusExt;
            Outcome::Bad(format!("signal {:?}: {stderr}", status.signal()))
        }
    }
}

/// A small `.npy` array (format 1.0, float32 [rows, 2]).
fn write_npy(path: &Path, rows: usize) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 2), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    for i in 0..rows * 2 {
        b.extend_from_slice(&(i as f32 * 0.25 - 3.0).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn damaged_files_end_in_a_result_or_a_clean_error_never_a_crash() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let copies = dir.path().join("copies");
    let scratch = dir.path().join("scratch");
    for d in [&base, &copies, &scratch] {
        std::fs::create_dir(d).unwrap();
    }
    // The intact files: a ring8 dataset (with its `/mixture`), samples drawn from it, a tiny
    // network's checkpoint (one training step) and an `.npy` array.
    let data = base.join("ring8.h5");
    let samples = base.join("samples.h5");
    let config = base.join("tiny.toml");
    std::fs::write(
        &config,
        "[denoiser]\nname = \"mlp\"\nwidth = 8\ndepth = 1\n",
    )
    .unwrap();
    let run_dir = base.join("run");
    let (d, s, c, r) = (
        data.display(),
        samples.display(),
        config.display(),
        run_dir.display(),
    );
    for line in [
        format!("data make ring8 --n 64 --seed 1 --out {d}"),
        format!("sample --data {d} --denoiser gmm --steps 2 --n 32 --out {s}"),
        format!("train --config {c} --data {d} --steps 1 --batch 8 --out {r}"),
    ] {
        ok(&line.split(' ').collect::<Vec<_>>());
    }
    let ckpt = fewstep::checkpoint::latest(&run_dir).unwrap();
    let npy = base.join("rows.npy");
    write_npy(&npy, 16);

    let mut rng = fewstep::seed::seeded(SEED);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corrupt-heap.h5");
    let mut datasets = flipped_copies(&data, &copies, 300, &mut rng);
    datasets.push(fixture);
    let sample_files = flipped_copies(&samples, &copies, 100, &mut rng);
    let checkpoints = flipped_copies(&ckpt, &copies, 100, &mut rng);
    let arrays = flipped_copies(&npy, &copies, 60, &mut rng);

    // Every command that opens such a file, each with the least work that still reads it. The
    // temporary paths hold no spaces, so a command line splits on them.
    let sc = scratch.display();
    let (data, samples, config) = (data.display(), samples.display(), config.display());
    let mut lines: Vec<String> = Vec::new();
    for (i, f) in datasets.iter().enumerate() {
        let f = f.display();
        lines.push(format!("data inspect {f}"));
        lines.push(format!(
            "sample --data {f} --denoiser gmm --steps 1 --n 4 --out {sc}/s{i}.h5"
        ));
        lines.push(format!("eval {samples} --reference {f}"));
        // Training reads the data through the loader; a third of the copies keep it short.
        if i % 3 == 0 {
            lines.push(format!(
                "train --config {config} --data {f} --steps 1 --batch 4 --out {sc}/t{i}"
            ));
        }
    }
    for f in &sample_files {
        lines.push(format!("eval {} --reference {data}", f.display()));
        lines.push(format!("data inspect {}", f.display()));
    }
    for (i, f) in checkpoints.iter().enumerate() {
        let f = f.display();
        lines.push(format!(
            "sample --checkpoint {f} --steps 1 --n 4 --out {sc}/c{i}.h5"
        ));
        // Distillation reads the teacher's metadata, its weights and (by default) its data.
        lines.push(format!(
            "distill --teacher {f} --student-steps 1 --steps 1 --batch 4 --out {sc}/d{i}"
        ));
    }
    for (i, f) in arrays.iter().enumerate() {
        lines.push(format!(
            "data import --from npy {} --out {sc}/i{i}.h5",
            f.display()
        ));
    }
    let jobs: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect();

    // A few children at a time: most of each run is process start-up.
    let next = Mutex::new(jobs.iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| loop {
                let Some(job) = next.lock().unwrap().next() else {
                    break;
                };
                let outcome = run(job, &scratch);
                results.lock().unwrap().push((job.join(" "), outcome));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let count = |want: &Outcome| results.iter().filter(|(_, o)| o == want).count();
    // Per command (its words up to the first path): runs, successes, clean errors.
    let mut per_command = std::collections::BTreeMap::<String, [usize; 3]>::new();
    for (job, o) in &results {
        let words: Vec<_> = job.split(' ').take_while(|w| !w.contains('/')).collect();
        let c = per_command.entry(words.join(" ")).or_default();
        c[0] += 1;
        c[1] += usize::from(*o == Outcome::Success);
        c[2] += usize::from(*o == Outcome::CleanError);
    }
    for (cmd, [runs, ok, clean]) in &per_command {
        eprintln!("  {cmd:<28} {runs:>4} runs: {ok:>4} successes, {clean:>4} clean errors");
    }
    let bad: Vec<_> = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Bad(_)))
        .collect();
    eprintln!(
        "fuzz_files: {} runs over {} damaged files: {} successes, {} clean errors, {} crashes \
         or hangs ({:.1} s)",
        results.len(),
        datasets.len() + sample_files.len() + checkpoints.len() + arrays.len(),
        count(&Outcome::Success),
        count(&Outcome::CleanError),
        bad.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        bad.is_empty(),
        "{} runs did not end cleanly: {bad:#?}",
        bad.len()
    );
    // The corpus is damaged enough to exercise the error paths, and mild enough that some
    // copies still read (a test whose every run fails would check nothing about success).
    assert!(count(&Outcome::CleanError) > results.len() / 10);
    assert!(count(&Outcome::Success) > results.len() / 10);
}
