//! Faults (issue 15): damaged checkpoints in every command that reads one, resumes that cannot
//! continue, runs interrupted by a signal or killed, `reproduce` asked to reuse a run trained with
//! another config, and stochastic samplers split into batches. The refusals are a table of
//! [`BadCase`]s (exit code, the names in the error, inputs unchanged, nothing left behind); the
//! faults that must end well (resume after Ctrl-C or a kill) are tests of their own below.

mod common;

use common::{check_bad_case, BadCase};
use fewstep::checkpoint::{self, Checkpoint};
use fewstep::denoiser::PARTS;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small training config: a narrow mlp, short runs, a line of log every 5 steps.
const SMALL: &str = "batch = 64\nlog_every = 5\ncheckpoint_every = 10\nkeep_checkpoints = 0\n\
                     [denoiser]\nname = \"mlp\"\nwidth = 64\n";

/// The last checkpoint of the fixture's teacher (20 steps, checkpoints at 10 and 20).
const LAST: &str = "ckpt-000000020.safetensors";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// ring8.h5 (2000 rows), small.toml and `teacher/` (20 steps of `train`) in `dir`.
fn base_fixture(dir: &Path) {
    write(&dir.join("small.toml"), SMALL);
    run_in(
        dir,
        &["data", "make", "ring8", "--n", "2000", "--out", "ring8.h5"],
    );
    run_in(
        dir,
        &[
            "train",
            "--data",
            "ring8.h5",
            "--config",
            "small.toml",
            "--steps",
            "20",
            "--out",
            "teacher",
        ],
    );
}

/// Runs `fewstep args` in `dir`; it must succeed. Returns stderr.
fn run_in(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "fewstep {args:?} failed: {err}");
    err
}

/// Ways a checkpoint file can be damaged, as (name, damage to the file's bytes or tensors).
type Damage = fn(&Path);

fn damages() -> Vec<(&'static str, Damage)> {
    vec![
        ("truncated", |f| {
            let b = std::fs::read(f).unwrap();
            std::fs::write(f, &b[..b.len() / 2]).unwrap();
        }),
        ("empty", |f| std::fs::write(f, b"").unwrap()),
        ("text", |f| {
            std::fs::write(f, "this is not a checkpoint\n").unwrap()
        }),
        ("huge-header", |f| {
            let mut b = std::fs::read(f).unwrap();
            b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            std::fs::write(f, b).unwrap();
        }),
        ("format", |f| {
            replace_in_header(f, "fewstep-checkpoint-1", "fewstep-checkpoint-9")
        }),
        ("no-config", |f| {
            replace_in_header(f, "\"config\":", "\"konfig\":")
        }),
        ("nan-ema", |f| poison(f, "ema.")),
    ]
}

/// Replaces `from` by `to` (as long) in the file's bytes (its JSON header).
fn replace_in_header(f: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let b = std::fs::read(f).unwrap();
    let at = b
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in {f:?}"));
    let mut b = b;
    b[at..at + from.len()].copy_from_slice(to.as_bytes());
    std::fs::write(f, b).unwrap();
}

/// Rewrites checkpoint `f` with one NaN in the first tensor whose name starts with `part`.
fn poison(f: &Path, part: &str) {
    let Checkpoint {
        meta, mut state, ..
    } = checkpoint::load(f, &PARTS).unwrap();
    let (_, t) = state.iter_mut().find(|(k, _)| k.starts_with(part)).unwrap();
    t.values[0] = f32::NAN;
    std::fs::remove_file(f).unwrap();
    checkpoint::save(f.parent().unwrap(), &meta, &state).unwrap();
}

/// A copy of run folder `from` as `to`, `damage` applied to its latest checkpoint.
fn damaged_copy(from: &Path, to: &Path, damage: Damage) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    damage(&to.join(LAST));
}

/// A change to a preset's table.
type Edit = fn(&mut toml::Table);

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Every command that reads a checkpoint, given a damaged one: `(what, args, extra names)`.
fn consumers(bad: &str, kind: &str) -> Vec<(String, Vec<String>)> {
    vec![
        (
            format!("train --resume from a {kind} checkpoint"),
            args(&format!("train --resume --out {bad}")),
        ),
        (
            format!("distill from a {kind} teacher"),
            args(&format!(
                "distill --teacher {bad} --out student-{kind} --steps 5 --batch 32"
            )),
        ),
        (
            format!("distill initialised from a {kind} checkpoint"),
            args(&format!(
                "distill --teacher teacher --config init-{kind}.toml --out student-{kind} \
                 --steps 5 --batch 32"
            )),
        ),
        (
            format!("sample a {kind} checkpoint"),
            args(&format!(
                "sample --checkpoint {bad} --n 10 --out samples-{kind}.h5"
            )),
        ),
        (
            format!("calibrate a {kind} checkpoint"),
            args(&format!(
                "calibrate --checkpoint {bad} --data ring8.h5 --n 64 --points 4 --out \
                 xvar-{kind}.json"
            )),
        ),
    ]
}

/// What the error of a damaged checkpoint must name besides the file.
fn names_of(kind: &str) -> Vec<&'static str> {
    match kind {
        "truncated" => vec!["truncated"],
        "empty" | "text" | "huge-header" => vec!["not a readable safetensors checkpoint"],
        "format" => vec!["fewstep-checkpoint-9"],
        "no-config" => vec!["`config`"],
        "nan-ema" => vec!["`ema.", "non-finite"],
        _ => vec![],
    }
}

/// The tiny Table 4 of the reproduce cases: ring8, one student step count, seconds of training.
fn table4(edit: impl FnOnce(&mut toml::Table)) -> String {
    let quick = fewstep::reproduce::TABLE4
        .iter()
        .find(|p| p.0 == "quick")
        .unwrap()
        .1;
    let mut t: toml::Table = quick.parse().unwrap();
    let mut set = |path: &[&str], v: toml::Value| {
        let mut at = &mut t;
        for k in &path[..path.len() - 1] {
            at = at[*k].as_table_mut().unwrap();
        }
        at.insert(path[path.len() - 1].into(), v);
    };
    set(&["data_n"], 2000.into());
    set(&["reference_n"], 500.into());
    set(&["n"], 200.into());
    set(&["student_steps"], toml::Value::Array(vec![1.into()]));
    set(&["teacher", "steps"], 20.into());
    set(&["teacher", "batch"], 64.into());
    set(&["teacher", "denoiser", "width"], 64.into());
    set(&["student", "steps"], 6.into());
    set(&["student", "batch"], 64.into());
    for b in t["baselines"].as_array_mut().unwrap() {
        b.as_table_mut().unwrap().insert("steps".into(), 4.into());
    }
    edit(&mut t);
    toml::to_string(&t).unwrap()
}

#[test]
fn faults_are_refused_clearly_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    base_fixture(dir);
    let teacher = dir.join("teacher");
    let mut cases: Vec<(String, Vec<String>, Vec<&str>)> = Vec::new();

    // Damaged checkpoints, in every command that reads one; the error names the file.
    for (kind, damage) in damages() {
        let bad = format!("bad-{kind}");
        damaged_copy(&teacher, &dir.join(&bad), damage);
        write(
            &dir.join(format!("init-{kind}.toml")),
            &format!("init = \"{bad}\"\n"),
        );
        for (what, a) in consumers(&bad, kind) {
            let mut names = names_of(kind);
            names.push(LAST);
            cases.push((what, a, names));
        }
    }
    // A NaN in the trained (not the EMA) weights stops a resume, which loads them.
    damaged_copy(&teacher, &dir.join("bad-nan-net"), |f| poison(f, "net."));
    cases.push((
        "train --resume with a NaN in the trained weights".into(),
        args("train --resume --out bad-nan-net"),
        vec!["`net.", "non-finite", LAST],
    ));

    // Resumes that cannot continue.
    std::fs::create_dir_all(dir.join("empty-run")).unwrap();
    // A kill during the first checkpoint's write leaves only its hidden temporary file.
    std::fs::create_dir_all(dir.join("killed-run")).unwrap();
    let half = std::fs::read(teacher.join(LAST)).unwrap();
    std::fs::write(
        dir.join("killed-run").join(format!(".{LAST}.x1y2z3.tmp")),
        &half[..half.len() / 2],
    )
    .unwrap();
    write(
        &dir.join("wide.toml"),
        "[denoiser]\nname = \"mlp\"\nwidth = 96\n",
    );
    run_in(
        dir,
        &["data", "make", "gmm64", "--n", "300", "--out", "gmm64.h5"],
    );
    for (what, a, names) in [
        (
            "resume with no run folder",
            "train --resume --out missing-run",
            vec!["missing-run", "no checkpoint"],
        ),
        (
            "resume an empty run folder",
            "train --resume --out empty-run",
            vec!["empty-run", "no checkpoint"],
        ),
        (
            "resume a run killed while writing its first checkpoint",
            "train --resume --out killed-run",
            vec!["killed-run", "no checkpoint"],
        ),
        (
            "resume a finished run without more steps",
            "train --resume --out teacher",
            vec![LAST, "already at step 20", "--steps"],
        ),
        (
            "resume asking for fewer steps than done",
            "train --resume --out teacher --steps 10",
            vec![LAST, "already at step 20", "--steps"],
        ),
        (
            "resume on data of another row shape",
            "train --resume --out teacher --steps 30 --data gmm64.h5",
            vec![LAST, "gmm64.h5", "[2]", "[64]"],
        ),
        (
            "resume with another network",
            "train --resume --out teacher --steps 30 --config wide.toml",
            vec![LAST, "mlp"],
        ),
        (
            "resume with data that does not exist",
            "train --resume --out teacher --steps 30 --data nowhere.h5",
            vec!["nowhere.h5"],
        ),
        (
            "a fresh run into a folder that holds a run",
            "train --data ring8.h5 --config small.toml --out teacher",
            vec!["teacher", "--resume"],
        ),
        (
            "a student into its teacher's folder",
            "distill --teacher teacher --out teacher --steps 5",
            vec!["teacher", "--resume"],
        ),
        (
            "a run folder that is a file",
            "train --data ring8.h5 --config small.toml --out ring8.h5",
            vec!["ring8.h5"],
        ),
        (
            "distill --resume with no run folder",
            "distill --resume --out missing-student",
            vec!["missing-student", "no checkpoint"],
        ),
        (
            "a teacher that does not exist",
            "distill --teacher no-teacher --out s",
            vec!["no-teacher"],
        ),
        (
            "sample a run folder without checkpoints",
            "sample --checkpoint empty-run --n 10 --out s.h5",
            vec!["empty-run", "no checkpoint"],
        ),
    ] {
        cases.push((what.into(), args(a), names));
    }

    // `reproduce` reuses a finished run only when it is the same run.
    write(&dir.join("t4.toml"), &table4(|_| {}));
    run_in(
        dir,
        &[
            "reproduce",
            "table4",
            "--config",
            "t4.toml",
            "--out",
            "repro",
        ],
    );
    let variants: [(&str, &str, Edit, Vec<&str>); 4] = [
        (
            "reproduce after a teacher lr change",
            "t4-lr.toml",
            |t| {
                t["teacher"]
                    .as_table_mut()
                    .unwrap()
                    .insert("lr".into(), 0.001.into());
            },
            vec!["teacher", "lr 0.003 -> 0.001", "fresh --out"],
        ),
        (
            "reproduce after a student length change",
            "t4-steps.toml",
            |t| {
                t["student"]
                    .as_table_mut()
                    .unwrap()
                    .insert("steps".into(), 8.into());
            },
            vec!["ddim-s1", "steps 6 -> 8", "fresh --out"],
        ),
        (
            "reproduce after a seed change",
            "t4-seed.toml",
            |t| {
                t.insert("seed".into(), 1.into());
            },
            vec!["teacher", "seed 0 -> 1"],
        ),
        (
            "reproduce after a data size change",
            "t4-data.toml",
            |t| {
                t.insert("data_n".into(), 3000.into());
            },
            vec!["ring8.h5", "3000"],
        ),
    ];
    for (what, file, edit, names) in variants {
        write(&dir.join(file), &table4(edit));
        cases.push((
            what.into(),
            args(&format!("reproduce table4 --config {file} --out repro")),
            names,
        ));
    }
    // A run from before run identities were recorded cannot be told apart: refused, not reused.
    let old = dir.join("repro-old");
    copy_tree(&dir.join("repro"), &old);
    let ck = checkpoint::latest(&old.join("ring8/teacher")).unwrap();
    let Checkpoint {
        mut meta, state, ..
    } = checkpoint::load(&ck, &PARTS).unwrap();
    (meta.identity, meta.run_hash) = (None, None);
    checkpoint::save(ck.parent().unwrap(), &meta, &state).unwrap();
    cases.push((
        "reproduce over a run without a recorded identity".into(),
        args("reproduce table4 --config t4.toml --out repro-old"),
        vec!["records no run identity", "fresh --out"],
    ));

    assert!(cases.len() >= 35, "{} cases", cases.len());
    for (what, args, names) in &cases {
        check_bad_case(
            dir,
            &BadCase {
                what,
                args: args.clone(),
                names: names.clone(),
            },
        );
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Steps of `log.jsonl`, in order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// `train` in `dir` as a child process, for signals.
fn spawn_train(dir: &Path, out: &str, steps: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args(["train", "--data", "ring8.h5", "--config", "small.toml"])
        .args(["--steps", steps, "--out", out])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `run`'s log reaches step `step` (the child still running).
fn wait_for_step(run: &Path, step: u64) {
    let t0 = Instant::now();
    while logged_steps(run).last().is_none_or(|&s| s < step) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no step {step} in {run:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Every tensor of a checkpoint, bit for bit (the metadata holds the run folder's name).
fn tensors(ck: &Path) -> Vec<(String, Vec<u32>)> {
    checkpoint::load(ck, &PARTS)
        .unwrap()
        .state
        .into_iter()
        .map(|(k, t)| (k, t.values.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn latest(run: &Path) -> (u64, PathBuf) {
    checkpoint::list(run).unwrap().pop().unwrap()
}

#[test]
fn ctrl_c_checkpoints_at_a_step_boundary_and_resume_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(&dir.join("small.toml"), SMALL);
    run_in(
        dir,
        &["data", "make", "ring8", "--n", "2000", "--out", "ring8.h5"],
    );

    // A long run (checkpoints every 10 steps), interrupted once it has logged step 25.
    let run = dir.join("cut");
    let child = spawn_train(dir, "cut", "100000", &[]);
    wait_for_step(&run, 25);
    signal(&child, libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let (at, ck) = latest(&run);
    assert!(at >= 25, "stopped at {at}");
    let name = ck.file_name().unwrap().to_str().unwrap();
    assert!(err.contains("SIGINT") && err.contains(name), "{err}");
    assert!(err.contains("--resume --out cut"), "{err}");
    // The log stops at the checkpoint's step.
    assert_eq!(logged_steps(&run).last(), Some(&at), "{err}");

    // Resumed to `at + 12`, it is the run that went there straight.
    let end = (at + 12).to_string();
    let resume_args = ["train", "--resume", "--out", "cut", "--steps", &end];
    run_in(dir, &resume_args);
    let straight = ["train", "--data", "ring8.h5", "--config", "small.toml"];
    run_in(
        dir,
        &[&straight[..], &["--steps", &end, "--out", "straight"]].concat(),
    );
    let (a, b) = (latest(&run), latest(&dir.join("straight")));
    assert_eq!((a.0, b.0), (at + 12, at + 12));
    assert!(tensors(&a.1) == tensors(&b.1), "resumed != straight");
    // Every step is logged once, in order.
    let steps = logged_steps(&run);
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(steps.last(), Some(&(at + 12)));

    // SIGTERM: the same stop, exit code 143.
    let child = spawn_train(dir, "term", "100000", &[]);
    wait_for_step(&dir.join("term"), 5);
    signal(&child, libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(err.contains("SIGTERM"), "{err}");
    let (at, _) = latest(&dir.join("term"));
    assert_eq!(logged_steps(&dir.join("term")).last(), Some(&at));
}

#[test]
fn ctrl_c_stops_distill_with_a_checkpoint_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    base_fixture(dir);
    let child = Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args(["distill", "--teacher", "teacher", "--config", "small.toml"])
        .args(["--steps", "100000", "--batch", "32", "--out", "student"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&dir.join("student"), 5);
    signal(&child, libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let (at, _) = latest(&dir.join("student"));
    assert!(at >= 5, "{at}");
    assert_eq!(logged_steps(&dir.join("student")).last(), Some(&at));
    // It continues from there.
    let end = (at + 3).to_string();
    run_in(
        dir,
        &["distill", "--resume", "--out", "student", "--steps", &end],
    );
    assert_eq!(latest(&dir.join("student")).0, at + 3);
}

#[test]
fn ctrl_c_stops_a_reproduction_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        &dir.join("t4.toml"),
        &table4(|t| {
            let teacher = t["teacher"].as_table_mut().unwrap();
            teacher.insert("steps".into(), 100000.into());
            teacher.insert("log_every".into(), 5.into());
        }),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args([
            "reproduce",
            "table4",
            "--config",
            "t4.toml",
            "--out",
            "repro",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let teacher = dir.join("repro/ring8/teacher");
    wait_for_step(&teacher, 5);
    signal(&child, libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("resumes unfinished runs"), "{err}");
    let (at, _) = latest(&teacher);
    assert_eq!(logged_steps(&teacher).last(), Some(&at));
}

#[test]
fn a_run_killed_before_its_first_checkpoint_leaves_no_duplicate_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Checkpoints every 10^6 steps (and at the end).
    let rare = SMALL.replace("checkpoint_every = 10", "checkpoint_every = 1000000");
    write(&dir.join("small.toml"), &rare);
    run_in(
        dir,
        &["data", "make", "ring8", "--n", "2000", "--out", "ring8.h5"],
    );
    // kill -9 after some logged steps, before any checkpoint.
    let mut child = spawn_train(dir, "run", "100000", &["--seed", "3"]);
    wait_for_step(&dir.join("run"), 10);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(checkpoint::list(&dir.join("run")).unwrap().is_empty());
    assert!(!logged_steps(&dir.join("run")).is_empty());
    // The folder holds the dead run's files but no checkpoint: a new run there is refused
    // without --force (nothing changes), and with it starts over: its log holds its own steps,
    // each once.
    let again = [
        "train",
        "--data",
        "ring8.h5",
        "--config",
        "small.toml",
        "--steps",
        "20",
        "--out",
        "run",
    ];
    check_bad_case(
        dir,
        &BadCase {
            what: "a new run in a killed run's folder without --force",
            args: again.iter().map(|a| a.to_string()).collect(),
            names: vec!["--force", "log.jsonl"],
        },
    );
    let mut forced = again.to_vec();
    forced.push("--force");
    run_in(dir, &forced);
    assert_eq!(logged_steps(&dir.join("run")), [5, 10, 15, 20]);
}

#[test]
fn a_kill_during_a_checkpoint_write_resumes_from_the_one_before() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    base_fixture(dir);
    // As if killed while writing step 20's checkpoint: step 10's, a hidden half-written file
    // and log lines past step 10.
    let run = dir.join("killed");
    copy_tree(&dir.join("teacher"), &run);
    let last = run.join(LAST);
    let bytes = std::fs::read(&last).unwrap();
    std::fs::remove_file(&last).unwrap();
    std::fs::write(
        run.join(format!(".{LAST}.a1b2c3.tmp")),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();
    run_in(dir, &["train", "--resume", "--out", "killed"]);
    assert!(tensors(&latest(&run).1) == tensors(&dir.join("teacher").join(LAST)));
    assert_eq!(logged_steps(&run), [5, 10, 15, 20]);
}

#[test]
fn stochastic_samplers_give_the_same_samples_at_any_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_in(
        dir,
        &["data", "make", "ring8", "--n", "500", "--out", "ring8.h5"],
    );
    // The samples' bits, drawn with `integrator`, `seed` and `--batch batch` (or the default).
    let draw = |integrator: &str, seed: &str, batch: Option<&str>| {
        let out = format!("{integrator}-{seed}-{}.h5", batch.unwrap_or("default"));
        let mut a = vec![
            "sample",
            "--data",
            "ring8.h5",
            "--denoiser",
            "gmm",
            "--integrator",
            integrator,
            "--steps",
            "4",
            "--n",
            "70",
            "--seed",
            seed,
            "--out",
            &out,
        ];
        if let Some(b) = batch {
            a.extend(["--batch", b]);
        }
        run_in(dir, &a);
        let data = fewstep::data::read_data(&dir.join(&out)).unwrap();
        data.values
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<u32>>()
    };
    let names = fewstep::registry::names("integrator");
    for stochastic in ["ddpm", "noise-ddim", "euler-ancestral"] {
        assert!(names.contains(&stochastic), "{names:?}");
    }
    let mut wholes = std::collections::BTreeMap::new();
    for name in names {
        let whole = draw(name, "5", None);
        for batch in ["7", "64"] {
            assert!(
                draw(name, "5", Some(batch)) == whole,
                "{name}: --batch {batch} changed the samples"
            );
        }
        wholes.insert(name, whole);
    }
    // The noise is per seed: the comparison above is not between noiseless runs.
    for name in ["ddpm", "noise-ddim", "euler-ancestral"] {
        assert!(wholes[name] != draw(name, "6", Some("7")), "{name}");
    }
}

/// A run folder works from any folder (issue 15): a teacher trained in `w/` with relative paths
/// is distilled from an unrelated folder with `--teacher` relative to that one, the student and
/// the teacher resume from a third folder, and the student is sampled and scored from there. The
/// stored configs hold absolute paths, and where a run was started from does not change its
/// identity; a stored relative path (as an older fewstep wrote) that does not exist here is
/// refused naming the config it came from and the key.
#[test]
fn run_folders_work_from_any_folder() {
    let root = std::env::temp_dir().join(format!("fewstep-anywhere-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (w, b, c) = (root.join("w"), root.join("b/deeper"), root.join("c"));
    for d in [&w, &b, &c] {
        std::fs::create_dir_all(d).unwrap();
    }
    base_fixture(&w);
    let abs_w = w.canonicalize().unwrap();
    let config = |run: &Path| -> toml::Table {
        std::fs::read_to_string(run.join("config.toml"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let path_of = |t: &toml::Table, key: &str| PathBuf::from(t[key].as_str().unwrap());
    let teacher = config(&w.join("teacher"));
    assert_eq!(path_of(&teacher, "data"), abs_w.join("ring8.h5"));
    assert_eq!(path_of(&teacher, "out"), abs_w.join("teacher"));

    // Distil from b: the teacher by a path relative to b, its data from its stored config.
    run_in(
        &b,
        &[
            "distill",
            "--teacher",
            "../../w/teacher",
            "--config",
            "../../w/small.toml",
            "--student-steps",
            "2",
            "--steps",
            "10",
            "--out",
            "student",
        ],
    );
    let student = config(&b.join("student"));
    assert_eq!(path_of(&student, "data"), abs_w.join("ring8.h5"));
    assert_eq!(path_of(&student, "teacher"), abs_w.join("teacher"));
    assert_eq!(path_of(&student, "init"), abs_w.join("teacher"));
    assert_eq!(
        path_of(&student, "out"),
        b.canonicalize().unwrap().join("student")
    );

    // From c: resume the student, then the teacher; sample the student and score it.
    run_in(
        &c,
        &[
            "distill",
            "--resume",
            "--out",
            "../b/deeper/student",
            "--steps",
            "20",
        ],
    );
    assert_eq!(latest(&b.join("student")).0, 20);
    run_in(
        &c,
        &[
            "train",
            "--resume",
            "--out",
            "../w/teacher",
            "--steps",
            "30",
        ],
    );
    assert_eq!(latest(&w.join("teacher")).0, 30);
    run_in(
        &c,
        &[
            "sample",
            "--checkpoint",
            "../b/deeper/student",
            "--n",
            "200",
            "--out",
            "s.h5",
        ],
    );
    run_in(&c, &["eval", "s.h5", "--reference", "../w/ring8.h5"]);

    // The same teacher started from c with other relative paths is the same run.
    run_in(
        &c,
        &[
            "train",
            "--data",
            "../w/ring8.h5",
            "--config",
            "../w/small.toml",
            "--steps",
            "20",
            "--out",
            "teacher-here",
        ],
    );
    let meta = |f: PathBuf| checkpoint::load(&f, &[]).unwrap().meta;
    let here = meta(c.join("teacher-here").join(LAST));
    let there = meta(w.join("teacher").join(LAST));
    assert_eq!(here.run_hash, there.run_hash);
    assert!(here.run_hash.is_some());

    // A run recorded by an older fewstep: relative paths in its config and identity.
    let old = w.join("old-teacher");
    copy_tree(&w.join("teacher"), &old);
    for step in [30, 20] {
        let ck = old.join(checkpoint::file_name(step));
        let Checkpoint {
            mut meta, state, ..
        } = checkpoint::load(&ck, &PARTS).unwrap();
        let mut cfg: toml::Table = meta.config.parse().unwrap();
        cfg.insert("data".into(), "ring8.h5".into());
        cfg.insert("out".into(), "old-teacher".into());
        meta.config = toml::to_string(&cfg).unwrap();
        let mut id: std::collections::BTreeMap<String, String> =
            serde_json::from_str(meta.identity.as_deref().unwrap()).unwrap();
        id.insert("data".into(), "\"ring8.h5\"".into());
        id.insert("out".into(), "\"old-teacher\"".into());
        meta.identity = Some(serde_json::to_string(&id).unwrap());
        std::fs::remove_file(&ck).unwrap();
        checkpoint::save(&old, &meta, &state).unwrap();
    }
    // Its identity still matches the run asked for (the path entries are left out).
    let overrides = fewstep::config::Overrides::default()
        .path("data", Some(&w.join("ring8.h5")))
        .path("out", Some(&old))
        .set("steps", Some(30i64));
    let cfg = fewstep::run::train::resolve(Some(&w.join("small.toml")), &overrides, false).unwrap();
    assert_eq!(fewstep::run::train::check_reusable(&cfg).unwrap(), Some(30));
    let other = overrides.set("lr", Some(0.01));
    let cfg = fewstep::run::train::resolve(Some(&w.join("small.toml")), &other, false).unwrap();
    let e = format!(
        "{:#}",
        fewstep::run::train::check_reusable(&cfg).unwrap_err()
    );
    assert!(e.contains("lr 0.002 -> 0.01"), "{e}");
    // From b its relative paths do not exist: refused, naming the stored config and the key.
    let cases = [
        (
            "a teacher whose stored data path is relative to another folder",
            args("distill --teacher ../../w/old-teacher --student-steps 2 --steps 10 --out s2"),
            vec![
                "the config of the teacher ",
                "old-teacher/ckpt-000000030.safetensors: data = \"ring8.h5\" does not exist",
                "where this runs); give its place with --data",
            ],
        ),
        (
            "a resumed run whose stored data path is relative to another folder",
            args("train --resume --out ../../w/old-teacher --steps 40"),
            vec![
                "the config of ../../w/old-teacher/ckpt-000000030.safetensors: data = \"ring8.h5\"",
                "does not exist",
            ],
        ),
    ];
    for (what, args, names) in &cases {
        check_bad_case(
            &b,
            &BadCase {
                what,
                args: args.clone(),
                names: names.clone(),
            },
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}
