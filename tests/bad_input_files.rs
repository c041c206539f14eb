//! Bad inputs about files, panics and silently wrong results (issue 15), run through the binary
//! as a user would: every case must fail with exit code 1 or 2, name the field or file, leave
//! every file in the folder byte for byte as it was and leave nothing behind
//! ([`common::check_bad_case`]). The fixtures (small datasets, a tiny trained run) are built once.

mod common;

use common::{check_bad_case, fewstep, ok, p, snapshot, BadCase};
use std::path::{Path, PathBuf};

/// An `.npy` file's bytes: little-endian float32 rows.
fn npy_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    common::npy("<f4", shape, &data)
}

/// The fixtures every case runs beside: ring8.h5 and gmm64.h5 (small), a tiny trained run in
/// `run/` (2-D mlp), an existing samples.h5, a read-only copy of it, a symlink to ring8.h5, an
/// .npy file, a plain file `afile`, a stale schema folder, and the bad configs.
fn fixtures(dir: &Path) -> PathBuf {
    let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    let ring8 = dir.join("ring8.h5");
    ok(&["data", "make", "ring8", "--n", "256", "--out", p(&ring8)]);
    let gmm64 = dir.join("gmm64.h5");
    ok(&["data", "make", "gmm64", "--n", "64", "--out", p(&gmm64)]);
    w(
        "tiny.toml",
        "checkpoint_every = 2\n[denoiser]\nname = \"mlp\"\nwidth = 16\ndepth = 1\n",
    );
    let run = dir.join("run");
    ok(&[
        "train",
        "--data",
        p(&ring8),
        "--steps",
        "2",
        "--batch",
        "16",
        "--config",
        p(&dir.join("tiny.toml")),
        "--out",
        p(&run),
    ]);
    let samples = dir.join("samples.h5");
    ok(&[
        "sample",
        "--data",
        p(&ring8),
        "--n",
        "32",
        "--steps",
        "2",
        "--out",
        p(&samples),
    ]);
    let ro = dir.join("readonly.h5");
    std::fs::copy(&samples, &ro).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::os::unix::fs::symlink(&ring8, dir.join("link.h5")).unwrap();
    }
    // h5py files fewstep cannot read: float16 rows (but `data inspect` can), rows compressed
    // with h5py's lzf.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for f in ["h5py_float16.h5", "h5py_lzf.h5"] {
        std::fs::copy(fixtures.join(f), dir.join(f)).unwrap();
    }
    let values: Vec<f32> = (0..12).map(|i| i as f32 / 4.0).collect();
    std::fs::write(dir.join("a.npy"), npy_f32(&[6, 2], &values)).unwrap();
    // Headers promising more than the file holds, or more than memory can address.
    std::fs::write(dir.join("short.npy"), npy_f32(&[1_000_000, 2], &values)).unwrap();
    std::fs::write(dir.join("huge.npy"), npy_f32(&[1 << 62, 4], &values)).unwrap();
    w("afile", "not a folder\n");
    std::fs::create_dir(dir.join("notes")).unwrap();
    w("notes/config.toml", "# the user's own file\n");
    std::fs::create_dir(dir.join("schemas")).unwrap();
    w("schemas/sample.schema.json", "{}\n");
    // Plugin settings that are each valid alone but wrong together, and sizes that overflow.
    w(
        "karras.toml",
        "[schedule]\nname = \"karras\"\nsigma_min = 5.0\nsigma_max = 1.0\n",
    );
    w(
        "icos.toml",
        "[schedule]\nname = \"interpolated-cosine\"\nnoise_low = 1000\nnoise_high = 32\n",
    );
    w(
        "table.toml",
        "[integrator]\nname = \"addim\"\nvariance = \"table\"\n",
    );
    w(
        "maxweight0.toml",
        "[objective]\nname = \"diffusion\"\nmax_weight = 0.0\n",
    );
    w(
        "train-karras.toml",
        "[schedule]\nname = \"karras\"\nsigma_min = 80.0\nsigma_max = 80.0\n",
    );
    w(
        "cd-few-teacher-steps.toml",
        "[objective]\nname = \"multistep-cd\"\nstudent_steps = 8\nteacher_steps_start = 4\n",
    );
    w(
        "ct-few-teacher-steps.toml",
        "[objective]\nname = \"multistep-ct\"\nstudent_steps = 16\nteacher_steps_end = 8\n",
    );
    w(
        "teacher-integrator.toml",
        "[objective]\nname = \"multistep-cd\"\n[objective.teacher_integrator]\nname = \
         \"addim\"\nvariance = \"table\"\n",
    );
    w("n-max.toml", "n = 9223372036854775807\n");
    w(
        "wide.toml",
        "[denoiser]\nname = \"mlp\"\nwidth = 100000000000\n",
    );
    w(
        "batch-max.toml",
        "batch = 9223372036854775807\nn = 1000000000000\n",
    );
    w("steps-max.toml", "steps = 9223372036854775807\nn = 16\n");
    w("samplers-nfe0.toml", "nfe = [0, 4]\n");
    w(
        "samplers-karras.toml",
        "[schedule]\nname = \"karras\"\nsigma_min = 2.0\nsigma_max = 1.0\n",
    );
    w("samplers-n0.toml", "n = 0\n");
    w("table4-steps0.toml", "student_steps = [0, 4]\n");
    w("table4-cd.toml", "student_steps = [128]\n");
    run
}

/// The newest checkpoint file of a run folder.
fn checkpoint_file(run: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files.pop().expect("the fixture run has a checkpoint")
}

fn case<'a>(what: &'a str, args: &[&str], names: &[&'a str]) -> BadCase<'a> {
    BadCase {
        what,
        args: args.iter().map(|a| a.to_string()).collect(),
        names: names.to_vec(),
    }
}

/// The table: one row per bad input, fault or formerly silent result.
fn cases(ckpt: &str) -> Vec<BadCase<'static>> {
    let ckpt: &'static str = Box::leak(ckpt.to_string().into_boxed_str());
    let s = |extra: &[&str]| {
        let mut v = vec!["sample", "--data", "ring8.h5", "--n", "16", "--steps", "2"];
        v.extend_from_slice(extra);
        v.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let mut all = vec![
        // --out naming an input of the same command, directly or through a symlink.
        case(
            "sample --out = its --data",
            &[],
            &["--out", "ring8.h5", "--data"],
        ),
        case(
            "sample --out = a symlink to its --data",
            &[],
            &["--out", "link.h5"],
        ),
        case(
            "sample --out = its --noise",
            &[],
            &["--out", "samples.h5", "--noise"],
        ),
        case(
            "sample --out = its checkpoint file, even with --force",
            &[
                "sample",
                "--checkpoint",
                "run",
                "--n",
                "4",
                "--out",
                ckpt,
                "--force",
            ],
            &["--out", "checkpoint"],
        ),
        case(
            "data import --out = its input",
            &["data", "import", "--from", "npy", "a.npy", "--out", "a.npy"],
            &["--out", "a.npy", "input"],
        ),
        case(
            "data import --out = its input, even with --force",
            &[
                "data", "import", "--from", "npy", "a.npy", "--out", "a.npy", "--force",
            ],
            &["--out", "a.npy"],
        ),
        case(
            "data inspect --grid = the dataset",
            &[
                "data", "inspect", "ring8.h5", "--grid", "ring8.h5", "--force",
            ],
            &["--grid", "ring8.h5", "dataset"],
        ),
        case(
            "calibrate --out = its --data",
            &[
                "calibrate",
                "--checkpoint",
                "run",
                "--data",
                "ring8.h5",
                "--out",
                "ring8.h5",
            ],
            &["--out", "ring8.h5"],
        ),
        case(
            "data import of an .npy whose header promises more rows than it holds",
            &[
                "data",
                "import",
                "--from",
                "npy",
                "short.npy",
                "--out",
                "x.h5",
            ],
            &["short.npy"],
        ),
        case(
            "data import of an .npy whose shape overflows",
            &[
                "data", "import", "--from", "npy", "huge.npy", "--out", "x.h5",
            ],
            &["huge.npy", "more bytes than fit"],
        ),
        // Data HDF5 can hold but fewstep cannot read: named, with what is supported.
        // (`data inspect` reads float16 rows and reports them: tests/data.rs.)
        case(
            "eval of float16 samples",
            &["eval", "h5py_float16.h5", "--reference", "ring8.h5"],
            &[
                "h5py_float16.h5",
                "dtype float16",
                "float32",
                "data inspect",
            ],
        ),
        case(
            "eval against a float16 reference",
            &["eval", "ring8.h5", "--reference", "h5py_float16.h5"],
            &["h5py_float16.h5", "dtype float16", "float32"],
        ),
        case(
            "train on float16 rows",
            &[
                "train",
                "--data",
                "h5py_float16.h5",
                "--steps",
                "1",
                "--out",
                "f16run",
            ],
            &["h5py_float16.h5", "float16", "float32"],
        ),
        case(
            "data inspect of lzf-compressed rows",
            &["data", "inspect", "h5py_lzf.h5"],
            &["h5py_lzf.h5", "lzf", "gzip"],
        ),
        case(
            "eval of lzf-compressed samples",
            &["eval", "h5py_lzf.h5", "--reference", "ring8.h5"],
            &["h5py_lzf.h5", "lzf", "gzip"],
        ),
        // An existing target needs --force; a read-only one is never replaced.
        case(
            "sample --out exists",
            &[],
            &["--out", "samples.h5", "--force"],
        ),
        case(
            "sample --out is read-only, even with --force",
            &[],
            &["--out", "readonly.h5", "read-only"],
        ),
        case(
            "data make --out exists",
            &["data", "make", "ring8", "--n", "8", "--out", "ring8.h5"],
            &["--out", "ring8.h5", "--force"],
        ),
        case(
            "data make --out is read-only",
            &[
                "data",
                "make",
                "ring8",
                "--n",
                "8",
                "--out",
                "readonly.h5",
                "--force",
            ],
            &["--out", "readonly.h5", "read-only"],
        ),
        case(
            "data import --out exists",
            &[
                "data",
                "import",
                "--from",
                "npy",
                "a.npy",
                "--out",
                "samples.h5",
            ],
            &["--out", "samples.h5", "--force"],
        ),
        case(
            "data inspect --grid exists",
            &["data", "inspect", "ring8.h5", "--grid", "samples.h5"],
            &["--grid", "samples.h5", "--force"],
        ),
        case(
            "calibrate --out exists",
            &[
                "calibrate",
                "--checkpoint",
                "run",
                "--data",
                "ring8.h5",
                "--out",
                "samples.h5",
            ],
            &["--out", "samples.h5", "--force"],
        ),
        case(
            "schema --out holds a different schema",
            &["schema", "--out", "schemas"],
            &["--out", "sample.schema.json", "--force"],
        ),
        // Targets that cannot be written: checked before any work.
        case(
            "sample --out is a folder",
            &[],
            &["--out", "schemas", "folder"],
        ),
        case("sample --out inside a plain file", &[], &["--out", "afile"]),
        case(
            "data make --out inside a plain file",
            &["data", "make", "ring8", "--n", "8", "--out", "afile/x.h5"],
            &["--out", "afile"],
        ),
        case(
            "train --out is a file",
            &[
                "train", "--data", "ring8.h5", "--steps", "1", "--out", "afile",
            ],
            &["--out", "afile", "not a folder"],
        ),
        case(
            "train --out holds a run, without --resume",
            &[
                "train", "--data", "ring8.h5", "--steps", "1", "--batch", "16", "--out", "run",
            ],
            &["run", "--resume"],
        ),
        case(
            "train --out holds other files and no checkpoint, without --force",
            &[
                "train", "--data", "ring8.h5", "--steps", "1", "--batch", "16", "--out", "notes",
            ],
            &["--out", "notes", "config.toml", "--force"],
        ),
        case(
            "distill --out holds other files and no checkpoint, without --force",
            &[
                "distill",
                "--teacher",
                "run",
                "--steps",
                "1",
                "--batch",
                "16",
                "--out",
                "notes",
            ],
            &["--out", "notes", "--force"],
        ),
        case(
            "distill --out is a file",
            &[
                "distill",
                "--teacher",
                "run",
                "--steps",
                "1",
                "--out",
                "ring8.h5",
            ],
            &["--out", "ring8.h5", "not a folder"],
        ),
        case(
            "reproduce --out is a file",
            &["reproduce", "samplers", "--out", "afile"],
            &["--out", "afile", "not a folder"],
        ),
        case(
            "schema --out is a file",
            &["schema", "--out", "afile"],
            &["--out", "afile"],
        ),
        // Sizes that would not fit: refused with both sizes before anything is written.
        case(
            "data make --n 10^12 (mixture)",
            &[
                "data",
                "make",
                "ring8",
                "--n",
                "1000000000000",
                "--out",
                "big.h5",
            ],
            &["--n 1000000000000", "TiB", "free"],
        ),
        case(
            "data make --n 10^12 (images)",
            &[
                "data",
                "make",
                "shapes32",
                "--n",
                "1000000000000",
                "--out",
                "big.h5",
            ],
            &["--n 1000000000000", "free"],
        ),
        case(
            "sample --n 10^12",
            &[
                "sample",
                "--data",
                "ring8.h5",
                "--n",
                "1000000000000",
                "--out",
                "big.h5",
            ],
            &["1000000000000 samples", "free"],
        ),
        case(
            "sample n = i64::MAX in a config",
            &[
                "sample",
                "--data",
                "ring8.h5",
                "--config",
                "n-max.toml",
                "--out",
                "big.h5",
            ],
            &["9223372036854775807 samples", "free"],
        ),
        case(
            "data make --n 0",
            &["data", "make", "ring8", "--n", "0", "--out", "x.h5"],
            &["--n"],
        ),
        case(
            "data make of an unknown set",
            &["data", "make", "ring9", "--out", "x.h5"],
            &["ring9", "ring8", "gmm64"],
        ),
        // Formerly panics or aborts.
        case(
            "train an mlp of width 10^11 (allocation abort)",
            &[
                "train",
                "--data",
                "ring8.h5",
                "--steps",
                "1",
                "--batch",
                "16",
                "--config",
                "wide.toml",
                "--out",
                "r6",
            ],
            &["mlp width 100000000000", "memory"],
        ),
        case(
            "bench train --batch 0",
            &["bench", "train", "--dim", "2", "--batch", "0"],
            &["--batch"],
        ),
        case(
            "reproduce samplers with nfe = [0, 4]",
            &[
                "reproduce",
                "samplers",
                "--config",
                "samplers-nfe0.toml",
                "--out",
                "o",
            ],
            &["nfe"],
        ),
        case(
            "reproduce samplers with n = 0",
            &[
                "reproduce",
                "samplers",
                "--config",
                "samplers-n0.toml",
                "--out",
                "o",
            ],
            &["samplers-n0.toml: n: expected a whole number >= 1, got 0"],
        ),
        case(
            "reproduce table4 with student_steps = [0, 4]",
            &[
                "reproduce",
                "table4",
                "--config",
                "table4-steps0.toml",
                "--out",
                "o",
            ],
            &["student"],
        ),
        case(
            "data inspect --grid-n 0",
            &[
                "data", "inspect", "ring8.h5", "--grid", "g.png", "--grid-n", "0",
            ],
            &["--grid-n"],
        ),
        // Formerly silently wrong results.
        case(
            "karras sigma_min >= sigma_max (sample)",
            &[],
            &["sigma_min", "sigma_max", "schedule"],
        ),
        case(
            "interpolated-cosine noise_low beyond e^pi noise_high",
            &[],
            &["noise_low", "noise_high", "schedule"],
        ),
        case(
            "addim variance = table without a table",
            &[],
            &["table", "integrator"],
        ),
        case(
            "diffusion max_weight = 0 (train)",
            &[
                "train",
                "--data",
                "ring8.h5",
                "--steps",
                "1",
                "--config",
                "maxweight0.toml",
                "--out",
                "r0",
            ],
            &["max_weight", "objective"],
        ),
        case(
            "karras sigma_min = sigma_max (train)",
            &[
                "train",
                "--data",
                "ring8.h5",
                "--steps",
                "1",
                "--config",
                "train-karras.toml",
                "--out",
                "r1",
            ],
            &["sigma_min", "schedule"],
        ),
        case(
            "multistep-cd student_steps above teacher_steps_start (distill)",
            &[
                "distill",
                "--teacher",
                "run",
                "--steps",
                "1",
                "--config",
                "cd-few-teacher-steps.toml",
                "--out",
                "r2",
            ],
            &["student_steps", "teacher_steps_start", "objective"],
        ),
        case(
            "distill --student-steps above the default 64 teacher steps",
            &[
                "distill",
                "--teacher",
                "run",
                "--steps",
                "1",
                "--student-steps",
                "128",
                "--out",
                "r3",
            ],
            &[
                "objective.student_steps: 128 exceeds",
                "teacher_steps_start",
            ],
        ),
        case(
            "multistep-ct student_steps above teacher_steps_end (train)",
            &[
                "train",
                "--data",
                "ring8.h5",
                "--steps",
                "1",
                "--config",
                "ct-few-teacher-steps.toml",
                "--out",
                "r4",
            ],
            &["student_steps", "teacher_steps_end"],
        ),
        case(
            "a nested teacher_integrator's settings are checked",
            &[
                "distill",
                "--teacher",
                "run",
                "--steps",
                "1",
                "--config",
                "teacher-integrator.toml",
                "--out",
                "r5",
            ],
            &["teacher_integrator", "table"],
        ),
        case(
            "reproduce samplers with a bad karras schedule",
            &[
                "reproduce",
                "samplers",
                "--config",
                "samplers-karras.toml",
                "--out",
                "o",
            ],
            &["sigma_min", "schedule"],
        ),
        case(
            "reproduce table4 with a student above the teacher's steps",
            &[
                "reproduce",
                "table4",
                "--config",
                "table4-cd.toml",
                "--out",
                "o",
            ],
            &["objective.student_steps: 128 exceeds"],
        ),
        case(
            "sample --checkpoint (2-D) with --data gmm64.h5 (64-D)",
            &[
                "sample",
                "--checkpoint",
                "run",
                "--data",
                "gmm64.h5",
                "--n",
                "4",
                "--out",
                "x.h5",
            ],
            &["--data", "gmm64.h5", "64", "2"],
        ),
        case(
            "sample --checkpoint with --denoiser gmm",
            &[
                "sample",
                "--checkpoint",
                "run",
                "--denoiser",
                "gmm",
                "--data",
                "ring8.h5",
                "--n",
                "4",
                "--out",
                "x.h5",
            ],
            &["--checkpoint", "mlp", "gmm"],
        ),
        case(
            "sample steps = i64::MAX",
            &[
                "sample",
                "--data",
                "ring8.h5",
                "--config",
                "steps-max.toml",
                "--out",
                "x.h5",
            ],
            &["steps = 9223372036854775807", "memory"],
        ),
        case(
            "sample batch = i64::MAX, n = 10^12",
            &[
                "sample",
                "--data",
                "ring8.h5",
                "--config",
                "batch-max.toml",
                "--out",
                "x.h5",
            ],
            &["batch of 1000000000000 rows", "memory"],
        ),
    ];
    // The sample cases that share the usual flags get them here.
    let fill: &[(&str, &[&str])] = &[
        ("sample --out = its --data", &["--out", "ring8.h5"]),
        (
            "sample --out = a symlink to its --data",
            &["--out", "link.h5"],
        ),
        (
            "sample --out = its --noise",
            &["--noise", "samples.h5", "--out", "samples.h5", "--force"],
        ),
        ("sample --out exists", &["--out", "samples.h5"]),
        (
            "sample --out is read-only, even with --force",
            &["--out", "readonly.h5", "--force"],
        ),
        ("sample --out is a folder", &["--out", "schemas"]),
        ("sample --out inside a plain file", &["--out", "afile/x.h5"]),
        (
            "karras sigma_min >= sigma_max (sample)",
            &["--config", "karras.toml", "--out", "x.h5"],
        ),
        (
            "interpolated-cosine noise_low beyond e^pi noise_high",
            &["--config", "icos.toml", "--out", "x.h5"],
        ),
        (
            "addim variance = table without a table",
            &["--config", "table.toml", "--out", "x.h5"],
        ),
    ];
    for c in &mut all {
        if let Some((_, extra)) = fill.iter().find(|(w, _)| *w == c.what) {
            c.args = s(extra);
        }
    }
    all
}

#[test]
fn bad_inputs_about_files_fail_clearly_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = fixtures(dir.path());
    let ckpt = checkpoint_file(&run);
    let ckpt = ckpt.strip_prefix(dir.path()).unwrap().to_str().unwrap();
    let table = cases(ckpt);
    assert!(table.len() >= 35, "{} cases", table.len());
    // Every case runs; the failures are reported together.
    let failed: Vec<String> = table
        .iter()
        .filter_map(|c| {
            std::panic::catch_unwind(|| check_bad_case(dir.path(), c))
                .err()
                .map(|e| match e.downcast::<String>() {
                    Ok(msg) => *msg,
                    Err(_) => c.what.to_string(),
                })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        table.len(),
        failed.join("\n")
    );
}

/// `--force` is the one way to replace an output: the same command that was refused then
/// succeeds, replaces the file and leaves nothing else behind.
#[test]
fn force_replaces_an_existing_output_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("ring8.h5");
    ok(&["data", "make", "ring8", "--n", "64", "--out", p(&data)]);
    let out = d.join("s.h5");
    let args = |seed: &str, force: bool| {
        let mut v = vec![
            "sample",
            "--data",
            p(&data),
            "--n",
            "8",
            "--steps",
            "2",
            "--seed",
            seed,
            "--out",
            p(&out),
        ];
        if force {
            v.push("--force");
        }
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |v: Vec<String>| {
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        fewstep(&v)
    };
    assert!(run(args("0", false)).status.success());
    let first = std::fs::read(&out).unwrap();
    let before = snapshot(d);
    let refused = run(args("1", false));
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(snapshot(d), before, "a refused write changed the folder");
    assert!(run(args("1", true)).status.success());
    let second = std::fs::read(&out).unwrap();
    assert_ne!(first, second, "--force wrote the new samples");
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "only ring8.h5 and s.h5: {names:?}");
}
