//! End-to-end tests of the `fewstep` binary: configs, errors, sampling, evaluation.

mod common;

use common::{err, ok, p};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A ring8 dataset in `dir`.
fn ring8(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("ring8.h5");
    ok(&[
        "data",
        "make",
        "ring8",
        "--n",
        &n.to_string(),
        "--seed",
        "1",
        "--out",
        p(&path),
    ]);
    path
}

#[test]
fn list_shows_every_registered_plugin_with_fields() {
    let out = ok(&["list"]);
    for kind in fewstep::registry::kind::ALL {
        for name in fewstep::registry::names(kind) {
            assert!(out.contains(name), "`fewstep list` misses {kind} {name}");
        }
    }
    assert!(out.contains("eta"), "addim's eta field is listed");
    assert!(err(&["list", "samplers"])
        .contains("valid kinds: schedule, integrator, denoiser, objective"));
}

#[test]
fn unknown_plugin_name_lists_valid_names() {
    let e = err(&[
        "sample",
        "--integrator",
        "addimm",
        "--out",
        "/nonexistent/x.h5",
    ]);
    assert!(e.contains("addimm"), "{e}");
    for name in fewstep::registry::names("integrator") {
        assert!(e.contains(name), "error should list `{name}`: {e}");
    }
}

#[test]
fn unknown_field_and_malformed_toml_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad_field = dir.path().join("bad_field.toml");
    std::fs::write(&bad_field, "[integrator]\nname = \"addim\"\netaa = 0.5\n").unwrap();
    let e = err(&["sample", "--config", p(&bad_field)]);
    assert!(e.contains("etaa") && e.contains("eta"), "{e}");

    let malformed = dir.path().join("malformed.toml");
    std::fs::write(&malformed, "[integrator\nname = 1\n").unwrap();
    let e = err(&["sample", "--config", p(&malformed)]);
    assert!(
        e.contains("malformed TOML") && e.contains("malformed.toml"),
        "{e}"
    );

    let e = err(&["sample", "--config", p(&dir.path().join("missing.toml"))]);
    assert!(e.contains("cannot read config"), "{e}");
}

#[test]
fn gmm_without_mixture_data_says_how_to_make_one() {
    let e = err(&["sample", "--denoiser", "gmm", "--n", "10"]);
    assert!(e.contains("data make"), "{e}");
}

#[test]
fn sample_is_seeded_flags_override_config_and_noise_file_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = ring8(dir.path(), 2000);
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        "steps = 3\nn = 500\n[integrator]\nname = \"addim\"\neta = 0.5\n",
    )
    .unwrap();
    let (a, b, c) = (
        dir.path().join("a.h5"),
        dir.path().join("b.h5"),
        dir.path().join("c.h5"),
    );
    let base = ["sample", "--data", p(&data), "--config", p(&cfg)];
    ok(&[&base[..], &["--seed", "3", "--out", p(&a)]].concat());
    ok(&[&base[..], &["--seed", "3", "--out", p(&b)]].concat());
    ok(&[&base[..], &["--seed", "4", "--steps", "5", "--out", p(&c)]].concat());
    let read = |f: &Path| fewstep::data::read_data(f).unwrap();
    let (ra, rb, rc) = (read(&a), read(&b), read(&c));
    assert_eq!(ra.shape, vec![500, 2]);
    assert_eq!(ra, rb, "same seed, same samples");
    assert_ne!(ra.values, rc.values);

    let file = hdf5::File::open(&c).unwrap();
    let ds = file.dataset("data").unwrap();
    let attr = |k: &str| fewstep::data::h5::read_str_attr(&ds, k).unwrap().unwrap();
    assert_eq!(attr("steps"), "5", "--steps overrides the config file");
    assert_eq!(attr("nfe"), "5");
    assert_eq!(attr("seed"), "4");
    assert!(
        attr("config").contains("eta = 0.5"),
        "the resolved config is recorded: {}",
        attr("config")
    );

    // The same noise file gives the same samples whatever the seed.
    let (d, e) = (dir.path().join("d.h5"), dir.path().join("e.h5"));
    ok(&[
        &base[..],
        &["--noise", p(&a), "--seed", "1", "--out", p(&d)],
    ]
    .concat());
    ok(&[
        &base[..],
        &["--noise", p(&a), "--seed", "2", "--out", p(&e)],
    ]
    .concat());
    assert_eq!(read(&d), read(&e));
    let f = dir.path().join("f.h5");
    let short = err(&[&base[..], &["--noise", p(&a), "--n", "501", "--out", p(&f)]].concat());
    assert!(
        short.contains("500 rows") && short.contains("501"),
        "{short}"
    );
}

#[test]
fn ddim_512_steps_of_the_exact_denoiser_reach_fd_below_001_on_ring8() {
    let dir = tempfile::tempdir().unwrap();
    let data = ring8(dir.path(), 20000);
    let out = dir.path().join("s.h5");
    ok(&[
        "sample",
        "--data",
        p(&data),
        "--integrator",
        "ddim",
        "--steps",
        "512",
        "--n",
        "20000",
        "--out",
        p(&out),
    ]);
    let json = ok(&["eval", p(&out), "--reference", p(&data), "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let fd = v["fd"].as_f64().unwrap();
    assert!(fd < 0.01, "FD {fd} >= 0.01");
    assert!(v["mode_kl"].as_f64().unwrap() < 0.01, "{v}");
}

#[test]
fn bench_loader_reports_epochs_and_the_raw_read_for_each_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shapes16.h5");
    ok(&["data", "make", "shapes16", "--n", "600", "--out", p(&path)]);
    let common = [
        "bench",
        "loader",
        p(&path),
        "--batch",
        "64",
        "--epochs",
        "2",
    ];
    for (extra, mode) in [
        (&["--stream"][..], "mapped"),
        (
            &["--stream", "--pread", "--workers", "1"][..],
            "read in windows",
        ),
        (&[][..], "held in memory"),
    ] {
        let out = ok(&[&common[..], extra].concat());
        assert!(out.contains("epoch 0: loader ") && out.contains("epoch 1: loader "));
        assert!(out.contains("% of it"), "{out}");
        let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(json["mode"], mode, "{out}");
        assert_eq!(json["loader_mib_per_s"].as_array().unwrap().len(), 2);
        assert!(json["raw_read_mib_per_s"].as_f64().unwrap() > 0.0);
    }
    let e = err(&["bench", "loader", p(&dir.path().join("nope.h5"))]);
    assert!(e.contains("nope.h5: no such file"), "{e}");
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .arg("list")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `fewstep list | head -0`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

#[test]
fn bench_train_reports_rate_and_peak_memory_as_json_for_any_shape() {
    let out = ok(&[
        "bench", "train", "--model", "mlp", "--dim", "17", "--batch", "8", "--steps", "2",
        "--warmup", "1",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(json["row_shape"], serde_json::json!([17]), "{out}");
    assert!(json["steps_per_s"].as_f64().unwrap() > 0.0, "{out}");
    assert!(json["peak_rss_kb"].as_u64().unwrap() > 0, "{out}");
}

#[test]
fn bench_sample_reports_network_evaluations_per_second() {
    let out = ok(&[
        "bench",
        "sample",
        "--model",
        "mlp",
        "--dim",
        "3",
        "--batch",
        "50",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--integrator",
        "addim",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(json["nfe"], 2, "{out}");
    assert_eq!(json["integrator"], "addim", "{out}");
    assert!(json["evaluations_per_s"].as_f64().unwrap() > 0.0, "{out}");
    let e = err(&["bench", "sample", "--dim", "3", "--batch", "0"]);
    assert!(e.contains("--batch must be at least 1"), "{e}");
    let e = err(&["bench", "sample", "--dim", "3", "--integrator", "nope"]);
    assert!(e.contains("nope") && e.contains("addim"), "{e}");
}

/// A checkpoint with one NaN in its EMA weights is refused at load, naming the file and the
/// tensor, and is left as it was (it would otherwise sample NaN everywhere with rc 0); samples
/// that come out non-finite anyway are refused, not written.
#[test]
fn a_checkpoint_with_a_non_finite_weight_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let data = ring8(dir.path(), 256);
    let run = dir.path().join("run");
    ok(&[
        "train",
        "--data",
        p(&data),
        "--steps",
        "2",
        "--batch",
        "16",
        "--out",
        p(&run),
    ]);
    let ckpt = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    // Put a NaN in the middle of one EMA tensor: the header is an 8-byte length, then JSON
    // with each tensor's byte offsets into the data after it.
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "ema.hidden.0.weight";
    let offsets = &header[name]["data_offsets"];
    let start = 8 + n + offsets[0].as_u64().unwrap() as usize;
    let end = 8 + n + offsets[1].as_u64().unwrap() as usize;
    let at = start + ((end - start) / 8) * 4;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&ckpt, &bytes).unwrap();
    let msg = err(&[
        "sample",
        "--checkpoint",
        p(&run),
        "--n",
        "10",
        "--out",
        p(&dir.path().join("s.h5")),
    ]);
    assert!(
        msg.contains(name) && msg.contains("non-finite") && msg.contains(&*ckpt.to_string_lossy()),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        bytes,
        "the checkpoint changed"
    );
    assert!(!dir.path().join("s.h5").exists());
}

/// `--out` naming an input of the same command (directly or through a symlink) is refused
/// before any work, and the input is left byte for byte as it was.
#[test]
fn out_naming_an_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = ring8(dir.path(), 300);
    let before = std::fs::read(&data).unwrap();
    let link = dir.path().join("link.h5");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    for out in [&data, &link] {
        let msg = err(&[
            "sample",
            "--data",
            p(&data),
            "--denoiser",
            "gmm",
            "--n",
            "50",
            "--out",
            p(out),
        ]);
        assert!(
            msg.contains("--out") && msg.contains("--data file"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read(&data).unwrap(),
            before,
            "sample replaced its data"
        );
    }
    // data import reading a .npy and writing over it.
    let npy = dir.path().join("x.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
    let pad = 64 - (10 + header.len() + 1) % 64;
    let header = format!("{header}{}\n", " ".repeat(pad));
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(&npy, &bytes).unwrap();
    let msg = err(&["data", "import", "--from", "npy", p(&npy), "--out", p(&npy)]);
    assert!(msg.contains("--out"), "{msg}");
    assert_eq!(
        std::fs::read(&npy).unwrap(),
        bytes,
        "import replaced its input"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        3,
        "a temporary file was left"
    );
}
