//! Data-parallel training and sharded sampling under `mpirun` (the `mpi` feature,
//! docs/distributed.md): 2 ranks against 1 process, from the command line as a user runs them.
//! Each test says it skipped, and why, when the binary lacks the feature or `mpirun` is absent.

mod common;
use common::{ok, p};
use fewstep::checkpoint;
use std::path::Path;
use std::process::Command;

/// `mpirun -np N` with the flags a root user on a small machine needs, or why it cannot run.
fn mpirun() -> Result<Command, String> {
    if !cfg!(feature = "mpi") {
        return Err("fewstep was built without the `mpi` feature".into());
    }
    let version = Command::new("mpirun")
        .arg("--version")
        .output()
        .map_err(|e| format!("no `mpirun` on PATH ({e})"))?;
    let mut cmd = Command::new("mpirun");
    if String::from_utf8_lossy(&version.stdout).contains("Open MPI") {
        // Two ranks on a machine with fewer free cores, and CI runs as root.
        cmd.args(["--oversubscribe"])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    Ok(cmd)
}

/// Runs `fewstep args` on `n` ranks; panics with every rank's output if the job fails.
fn run_ranks(mpirun: &mut Command, n: usize, args: &[&str]) -> String {
    let out = mpirun
        .args(["-np", &n.to_string(), env!("CARGO_BIN_EXE_fewstep")])
        .args(args)
        .output()
        .expect("run mpirun");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mpirun -np {n} fewstep {args:?} failed:\n{text}"
    );
    text
}

/// Whether a 2-rank job can run here; says why not when it cannot.
fn can_run() -> bool {
    mpirun().map_err(|why| eprintln!("skipped: {why}")).is_ok()
}

/// Every part of a run's latest checkpoint (weights, EMA, AdamW moments) as one flat vector per
/// tensor, in name order.
fn parts(run: &Path) -> Vec<(String, Vec<f32>)> {
    let path = checkpoint::latest(run).unwrap();
    let ck = checkpoint::load(&path, &fewstep::denoiser::PARTS).unwrap();
    ck.state.into_iter().map(|(k, t)| (k, t.values)).collect()
}

/// The largest per-tensor relative difference, max |a - b| / max |a|, over every tensor.
fn max_rel_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((ka, va), (kb, vb))| {
            assert_eq!(ka, kb);
            let scale = va.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
            let diff = va
                .iter()
                .zip(vb)
                .fold(0f64, |m, (&x, &y)| m.max(f64::from(x - y).abs()));
            if scale > 0.0 {
                diff / scale
            } else {
                diff
            }
        })
        .fold(0.0, f64::max)
}

#[test]
fn two_ranks_train_the_single_process_weights_and_resume_exactly() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    ok(&["data", "make", "ring8", "--n", "4000", "--out", p(&data)]);
    // 65 rows: shares of 33 and 32, so the ranks' means are weighted, not simply averaged.
    let run = |name: &str, steps: &str| {
        let out = dir.path().join(name);
        let args = [
            "train",
            "--data",
            p(&data),
            "--steps",
            steps,
            "--batch",
            "65",
            "--out",
            p(&out),
        ]
        .map(str::to_string);
        (out, args)
    };
    let (one, args) = run("one", "50");
    ok(&args.each_ref().map(String::as_str));
    let (two, args) = run("two", "50");
    let log = run_ranks(
        &mut mpirun().unwrap(),
        2,
        &args.each_ref().map(String::as_str),
    );
    assert!(log.contains("trained 50 steps on 2 processes"), "{log}");
    assert_eq!(
        log.matches("trained 50 steps").count(),
        1,
        "rank 0 alone reports: {log}"
    );

    let diff = max_rel_diff(&parts(&one), &parts(&two));
    eprintln!("2 ranks vs 1 process, 50 steps: max relative difference {diff:.3e}");
    // Float reduction order only: the batch's gradient summed in two halves, then added.
    assert!(diff < 1e-4, "max relative difference {diff:e}");

    // Resume under MPI: 25 steps, then on to 50, equals 50 straight on 2 ranks bit for bit.
    let (half, mut args) = run("half", "25");
    run_ranks(
        &mut mpirun().unwrap(),
        2,
        &args.each_ref().map(String::as_str),
    );
    args[4] = "50".into();
    let mut resumed: Vec<&str> = args.iter().map(String::as_str).collect();
    resumed.push("--resume");
    run_ranks(&mut mpirun().unwrap(), 2, &resumed);
    assert!(
        parts(&half) == parts(&two),
        "a resumed 2-rank run differs from a straight one"
    );
    // Rank 0 alone wrote the log: one line per logging window, no duplicates.
    let lines = std::fs::read_to_string(two.join("log.jsonl")).unwrap();
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<fewstep::train::LogLine>(l)
                .unwrap()
                .step
        })
        .collect();
    assert_eq!(steps, [50]);
}

#[test]
fn two_ranks_distil_what_one_process_distils() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    ok(&["data", "make", "ring8", "--n", "4000", "--out", p(&data)]);
    let teacher = dir.path().join("teacher");
    ok(&[
        "train",
        "--data",
        p(&data),
        "--steps",
        "20",
        "--batch",
        "64",
        "--out",
        p(&teacher),
    ]);
    // multistep CD: a grid slot per row (ObjectiveCtx::per_row) and a teacher step per row.
    let args = |out: &Path| {
        [
            "distill",
            "--teacher",
            p(&teacher),
            "--objective",
            "multistep-cd",
            "--student-steps",
            "4",
            "--steps",
            "20",
            "--batch",
            "64",
            "--data",
            p(&data),
            "--out",
            p(out),
        ]
        .map(str::to_string)
    };
    let one = dir.path().join("one");
    ok(&args(&one).each_ref().map(String::as_str));
    let two = dir.path().join("two");
    run_ranks(
        &mut mpirun().unwrap(),
        2,
        &args(&two).each_ref().map(String::as_str),
    );
    let diff = max_rel_diff(&parts(&one), &parts(&two));
    eprintln!("multistep-cd, 2 ranks vs 1 process, 20 steps: max relative difference {diff:.3e}");
    assert!(diff < 1e-4, "max relative difference {diff:e}");
}

#[test]
fn two_ranks_sample_the_single_process_samples_into_one_file() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    ok(&["data", "make", "ring8", "--n", "2000", "--out", p(&data)]);
    // The exact mixture denoiser: no training needed. 1000 rows in batches of 300: every batch
    // is split over the ranks, the last one short (100 rows).
    for integrator in ["ddim", "addim"] {
        let args = |out: &Path| {
            [
                "sample",
                "--data",
                p(&data),
                "--denoiser",
                "gmm",
                "--integrator",
                integrator,
                "--steps",
                "8",
                "--n",
                "1000",
                "--batch",
                "300",
                "--seed",
                "3",
                "--out",
                p(out),
            ]
            .map(str::to_string)
        };
        let one = dir.path().join(format!("one-{integrator}.h5"));
        ok(&args(&one).each_ref().map(String::as_str));
        let two = dir.path().join(format!("two-{integrator}.h5"));
        let log = run_ranks(
            &mut mpirun().unwrap(),
            2,
            &args(&two).each_ref().map(String::as_str),
        );
        assert_eq!(log.matches("wrote 1000 samples").count(), 1, "{log}");
        let (a, b) = (
            fewstep::data::read_data(&one).unwrap(),
            fewstep::data::read_data(&two).unwrap(),
        );
        assert_eq!(a.shape, b.shape);
        assert!(a.values == b.values, "{integrator}: 2-rank samples differ");
    }
}
