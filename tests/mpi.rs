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

/// Whether a 2-rank job can run here (says why not when it cannot): then a guard that keeps the
/// other tests' MPI jobs waiting while it lives. Jobs of 2 ranks one at a time: on 2 cores,
/// several at once made single steps take seconds.
fn can_run() -> Option<std::sync::MutexGuard<'static, ()>> {
    static JOBS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    mpirun().map_err(|why| eprintln!("skipped: {why}")).ok()?;
    Some(JOBS.lock().unwrap_or_else(|e| e.into_inner()))
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
    let Some(_one_job_at_a_time) = can_run() else {
        return;
    };
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
    let Some(_one_job_at_a_time) = can_run() else {
        return;
    };
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
    let Some(_one_job_at_a_time) = can_run() else {
        return;
    };
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

/// The metrics of `fewstep eval --json` output (the one line starting with `{`), by name; a
/// metric the reference cannot give (null) is left out.
fn metrics(out: &str) -> Vec<(String, f64)> {
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "one JSON line (rank 0's): {out}");
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(lines[0]).unwrap();
    v.into_iter()
        .filter_map(|(k, v)| Some((k, v.as_f64()?)))
        .collect()
}

#[test]
fn two_ranks_train_sample_and_eval_as_the_readme_does() {
    let Some(_one_job_at_a_time) = can_run() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    ok(&["data", "make", "ring8", "--n", "4000", "--out", p(&data)]);
    let (teacher, samples) = (dir.path().join("teacher"), dir.path().join("samples.h5"));
    let mut train = vec!["train", "--data", p(&data), "--steps", "30"];
    train.extend(["--batch", "64", "--out", p(&teacher)]);
    run_ranks(&mut mpirun().unwrap(), 2, &train);
    // 3001 rows: shares of 1501 and 1500 in sample and in eval.
    let mut sample = vec![
        "sample",
        "--checkpoint",
        p(&teacher),
        "--integrator",
        "addim",
    ];
    sample.extend(["--steps", "4", "--n", "3001", "--out", p(&samples)]);
    run_ranks(&mut mpirun().unwrap(), 2, &sample);

    // eval: each rank scores its share of the rows, rank 0 combines and prints.
    let eval = ["eval", p(&samples), "--reference", p(&data), "--json"];
    let one = metrics(&ok(&eval));
    let two = metrics(&run_ranks(&mut mpirun().unwrap(), 2, &eval));
    let names: Vec<&str> = one.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["fd", "fd_exact", "mode_kl", "nll", "sw2"]);
    for ((name, a), (name2, b)) in one.iter().zip(&two) {
        assert_eq!(name, name2);
        let rel = (a - b).abs() / a.abs();
        eprintln!("eval, 2 ranks vs 1 process: {name} {a} vs {b}: relative difference {rel:.2e}");
        // FD merges the ranks' moments and NLL adds their sums: reduction order only.
        assert!(rel < 1e-9, "{name}: {a} vs {b}");
        // Mode counts add exactly; SW2 merges the ranks' sorted projections into the same sort.
        if name == "mode_kl" || name == "sw2" {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}: {a} vs {b}");
        }
    }
}

/// The steps of a run's `log.jsonl`, in file order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<fewstep::train::LogLine>(l)
                .unwrap()
                .step
        })
        .collect()
}

/// `mpirun -np 2 fewstep args` with `env` added to mpirun's environment, output piped.
fn spawn_ranks(args: &[String], env: &[(&str, &str)]) -> std::process::Child {
    mpirun()
        .unwrap()
        .envs(env.iter().copied())
        .args(["-np", "2", env!("CARGO_BIN_EXE_fewstep")])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `run`'s log reaches step `step`.
fn wait_for_step(run: &Path, step: u64) {
    let t0 = std::time::Instant::now();
    while logged_steps(run).last().is_none_or(|&s| s < step) {
        assert!(t0.elapsed().as_secs() < 120, "no step {step} in {run:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The pid of rank `rank` among `mpirun`'s children (from their `OMPI_COMM_WORLD_RANK`).
fn rank_pid(mpirun: u32, rank: usize) -> i32 {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`: the fields after the last ')'.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|f| f.split_whitespace().nth(1));
        if ppid != Some(&mpirun.to_string()) {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return pid;
        }
    }
    panic!("no rank {rank} among the children of mpirun {mpirun}")
}

/// The step a 2-rank run stopped by a signal stopped after, and the checks every stop must pass:
/// no rank aborted, the log ends at the last checkpoint with each step once, and (`reported`)
/// rank 0 alone says so, naming the checkpoint.
fn check_stop(run: &Path, o: &std::process::Output, reported: bool) -> u64 {
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{text}");
    let (at, ck) = checkpoint::list(run).unwrap().pop().unwrap();
    if reported {
        assert_eq!(text.matches("interrupted by SIGTERM").count(), 1, "{text}");
        let name = ck.file_name().unwrap().to_str().unwrap();
        assert!(
            text.contains(&format!("stopped after step {at} ")),
            "{text}"
        );
        assert!(text.contains(name), "{text}");
    }
    assert!(
        !text.contains("MPI_ABORT") && !text.contains("error (rank"),
        "{text}"
    );
    let steps = logged_steps(run);
    assert_eq!(steps.last(), Some(&at), "{text}");
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    at
}

#[test]
fn sigterm_to_one_rank_or_to_mpirun_stops_both_after_one_step_and_resume_is_exact() {
    let Some(_one_job_at_a_time) = can_run() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    ok(&["data", "make", "ring8", "--n", "2000", "--out", p(&data)]);
    let config = dir.path().join("small.toml");
    std::fs::write(
        &config,
        // A constant learning rate: a decay would be planned over `steps`, which differ.
        "batch = 64\nlog_every = 5\ncheckpoint_every = 10\nkeep_checkpoints = 0\n\
         lr_decay = \"constant\"\n[denoiser]\nname = \"mlp\"\nwidth = 64\n",
    )
    .unwrap();
    let args = |out: &Path, steps: &str| {
        let args = ["train", "--data", p(&data), "--config", p(&config)];
        let mut args: Vec<String> = args.map(str::to_string).to_vec();
        args.extend(["--steps", steps, "--out", p(out)].map(str::to_string));
        args
    };

    // SIGTERM to rank 1 alone: rank 0 learns of it in the step's all-reduce, both stop after
    // the same step and rank 0 writes the checkpoint; every rank exits with 143.
    let cut = dir.path().join("cut");
    let child = spawn_ranks(&args(&cut, "1000000"), &[]);
    wait_for_step(&cut, 15);
    let rank1 = rank_pid(child.id(), 1);
    // SAFETY: sends a signal to a process our child started.
    assert_eq!(unsafe { libc::kill(rank1, libc::SIGTERM) }, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143));
    let at = check_stop(&cut, &o, true);
    assert!(at >= 15, "stopped at {at}");

    // Resumed on 2 ranks to `at + 12`, it is the 2-rank run that went there straight.
    let end = (at + 12).to_string();
    let mut resume = args(&cut, &end);
    resume.push("--resume".into());
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    run_ranks(&mut mpirun().unwrap(), 2, &resume);
    let straight = dir.path().join("straight");
    let straight_args = args(&straight, &end);
    let straight_args: Vec<&str> = straight_args.iter().map(String::as_str).collect();
    run_ranks(&mut mpirun().unwrap(), 2, &straight_args);
    assert!(
        parts(&cut) == parts(&straight),
        "resumed after SIGTERM != straight"
    );
    let steps = logged_steps(&cut);
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(steps.last(), Some(&(at + 12)));

    // SIGTERM to mpirun: OpenMPI 4.1 waits odls_base_sigkill_timeout, sends SIGTERM to every
    // rank, and SIGKILL after as long again; the ranks stop and checkpoint in between. 3 s
    // instead of the default 1: a loaded test machine once took over a second for one step.
    // mpirun may no longer forward the ranks' last words by then (seen here: 1 run in 4), so
    // the run folder is what is checked.
    let term = dir.path().join("term");
    let timeout = [("OMPI_MCA_odls_base_sigkill_timeout", "3")];
    let child = spawn_ranks(&args(&term, "1000000"), &timeout);
    wait_for_step(&term, 15);
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let at = check_stop(&term, &child.wait_with_output().unwrap(), false);
    assert!(at >= 15, "stopped at {at}");
}

#[test]
fn bench_train_on_two_ranks_reports_the_all_reduce() {
    let Some(_one_job_at_a_time) = can_run() else {
        return;
    };
    let args = [
        "bench", "train", "--model", "mlp", "--dim", "2", "--batch", "64",
    ];
    let args = [&args[..], &["--steps", "4", "--warmup", "1"]].concat();
    let out = run_ranks(&mut mpirun().unwrap(), 2, &args);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "rank 0 alone reports: {out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["ranks"], 2, "{v}");
    let params = v["params"].as_u64().unwrap();
    // The gradient, the loss and the two stop flags, as f32.
    assert_eq!(v["allreduce_bytes"].as_u64(), Some(4 * (params + 3)), "{v}");
    // Shares of the step time, and seconds.
    for (key, max) in [("comm_share", 1.0), ("allreduce_alone_s", f64::INFINITY)] {
        let per_rank = v[key].as_array().unwrap();
        assert_eq!(per_rank.len(), 2, "{v}");
        assert!(
            per_rank
                .iter()
                .all(|s| (0.0..=max).contains(&s.as_f64().unwrap())),
            "{v}"
        );
    }
    assert!(
        out.contains("one all-reduce right after a barrier"),
        "{out}"
    );
}
