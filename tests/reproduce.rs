//! End to end through the binary: `fewstep distill` (a student from a teacher checkpoint or from
//! the exact `gmm` denoiser, sampled on its own grid), and `fewstep reproduce table3|table4|
//! figure1` on tiny versions of the presets (every file written, finished runs reused).

mod common;

use common::{err, ok, ok_logged, p};
use fewstep::report::fmt3;
use std::path::{Path, PathBuf};

fn attr(file: &Path, name: &str) -> String {
    let f = hdf5::File::open(file).unwrap();
    fewstep::data::h5::read_str_attr(&f.dataset("data").unwrap(), name)
        .unwrap()
        .unwrap()
}

/// A small ring8 set and a teacher trained on it for a few steps.
fn teacher(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("ring8.h5");
    ok(&["data", "make", "ring8", "--n", "2000", "--out", p(&data)]);
    let teacher = dir.join("teacher");
    ok(&[
        "train",
        "--data",
        p(&data),
        "--steps",
        "30",
        "--batch",
        "64",
        "--out",
        p(&teacher),
    ]);
    (data, teacher)
}

#[test]
fn distill_starts_from_the_teacher_and_the_student_samples_on_its_grid() {
    let dir = tempfile::tempdir().unwrap();
    let (data, teacher) = teacher(dir.path());
    let student = dir.path().join("student");
    ok(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--student-steps",
        "2",
        "--steps",
        "20",
        "--batch",
        "64",
        "--out",
        p(&student),
    ]);
    // Network, initial weights and data come from the teacher; the objective is the default.
    let config: toml::Table = std::fs::read_to_string(student.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(config["denoiser"]["name"].as_str(), Some("mlp"));
    assert_eq!(config["init"].as_str(), Some(p(&teacher)));
    assert_eq!(config["data"].as_str(), Some(p(&data)));
    assert_eq!(config["objective"]["name"].as_str(), Some("multistep-cd"));
    assert_eq!(config["objective"]["student_steps"].as_integer(), Some(2));

    // Algorithm 2 by default: DDIM on the student's 2-step grid of its cosine schedule.
    let samples = dir.path().join("s.h5");
    ok(&[
        "sample",
        "--checkpoint",
        p(&student),
        "--n",
        "300",
        "--out",
        p(&samples),
    ]);
    assert_eq!(attr(&samples, "steps"), "2");
    assert_eq!(attr(&samples, "nfe"), "2");
    let used: toml::Table = attr(&samples, "config").parse().unwrap();
    assert_eq!(used["schedule"]["name"].as_str(), Some("cosine"));
    assert_eq!(used["integrator"]["name"].as_str(), Some("ddim"));
    let values = fewstep::data::read_data(&samples).unwrap().values;
    assert!(values.iter().all(|v| v.is_finite()));
    // Flags still win over the student's defaults.
    ok(&[
        "sample",
        "--checkpoint",
        p(&student),
        "--n",
        "50",
        "--steps",
        "4",
        "--out",
        p(&samples),
        "--force",
    ]);
    assert_eq!(attr(&samples, "steps"), "4");

    // Resuming continues to more steps; the teacher was not touched.
    ok(&["distill", "--out", p(&student), "--resume", "--steps", "30"]);
    assert!(student.join("ckpt-000000030.safetensors").exists());
}

#[test]
fn distill_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (data, teacher) = teacher(dir.path());
    let out = dir.path().join("x");
    assert!(err(&["distill", "--out", p(&out)]).contains("no training data"));
    let e = err(&["distill", "--data", p(&data), "--out", p(&out)]);
    assert!(e.contains("needs a teacher"), "{e}");
    let e = err(&["distill", "--teacher", "no/such/run", "--out", p(&out)]);
    assert!(e.contains("no/such/run"), "{e}");
    let e = err(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--objective",
        "nope",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("multistep-ct") && e.contains("progressive"),
        "{e}"
    );

    // A checkpoint and a denoiser plugin as teachers at once is refused.
    let cfg = dir.path().join("both.toml");
    std::fs::write(&cfg, "[teacher_denoiser]\nname = \"gmm\"\n").unwrap();
    let e = err(&[
        "distill",
        "--config",
        p(&cfg),
        "--teacher",
        p(&teacher),
        "--steps",
        "2",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("keep one"), "{e}");
}

#[test]
fn the_exact_mixture_denoiser_teaches_a_student() {
    let dir = tempfile::tempdir().unwrap();
    let (data, teacher) = teacher(dir.path());
    // The student is the teacher's network: an mlp of `fewstep train`'s default width, 512.
    let cfg = dir.path().join("gmm-teacher.toml");
    std::fs::write(
        &cfg,
        format!(
            "init = \"{}\"\ndata = \"{}\"\nsteps = 10\nbatch = 64\n\
             [teacher_denoiser]\nname = \"gmm\"\n[denoiser]\nname = \"mlp\"\nwidth = 512\n\
             [objective]\nname = \"multistep-cd\"\nstudent_steps = 4\n",
            p(&teacher),
            p(&data)
        ),
    )
    .unwrap();
    let student = dir.path().join("student");
    ok(&["distill", "--config", p(&cfg), "--out", p(&student)]);
    let samples = dir.path().join("s.h5");
    ok(&[
        "sample",
        "--checkpoint",
        p(&student),
        "--n",
        "100",
        "--out",
        p(&samples),
    ]);
    assert_eq!(attr(&samples, "nfe"), "4");
}

/// A preset with `edit` applied, written to `dir/name`.
fn preset(dir: &Path, name: &str, text: &str, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let mut t: toml::Table = text.parse().unwrap();
    edit(&mut t);
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
    path
}

/// Shrinks a table config to seconds: ring8 or two-modes rows, a few training steps.
fn shrink(t: &mut toml::Table, steps: &[i64]) {
    let set = |t: &mut toml::Table, k: &str, v: toml::Value| {
        t.insert(k.into(), v);
    };
    set(t, "data_n", 2000.into());
    set(t, "reference_n", 1000.into());
    set(t, "n", 400.into());
    set(
        t,
        "student_steps",
        toml::Value::Array(steps.iter().map(|&s| s.into()).collect()),
    );
    let teacher = t["teacher"].as_table_mut().unwrap();
    teacher.insert("steps".into(), 30.into());
    teacher.insert("batch".into(), 64.into());
    let student = t["student"].as_table_mut().unwrap();
    student.insert("steps".into(), 12.into());
    student.insert("batch".into(), 64.into());
    for b in t["baselines"].as_array_mut().unwrap() {
        b.as_table_mut().unwrap().insert("steps".into(), 16.into());
    }
}

#[test]
fn reproduce_table4_writes_the_paper_layout_and_reuses_finished_runs() {
    use fewstep::reproduce::TABLE4;
    let dir = tempfile::tempdir().unwrap();
    let quick = TABLE4.iter().find(|p| p.0 == "quick").unwrap().1;
    let cfg = preset(dir.path(), "t4.toml", quick, |t| {
        t.insert("datasets".into(), toml::Value::Array(vec!["ring8".into()]));
        shrink(t, &[1, 2]);
    });
    let out = dir.path().join("out");
    let args = ["reproduce", "table4", "--config", p(&cfg), "--out", p(&out)];
    let md = ok(&args);
    assert!(md.contains("| Student steps | DDIM | aDDIM |"), "{md}");
    assert!(md.contains("teacher, aDDIM (16 steps)"), "{md}");
    assert!(md.contains("## NLL on ring8"), "{md}");
    assert!(
        md.contains("## FD to the exact mixture moments on ring8"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("table4.csv")).unwrap();
    // header, noise floor, baseline, 2 methods x 2 steps
    assert_eq!(csv.lines().count(), 7, "{csv}");
    // A standard CSV reader gives back every label, the baseline's comma included.
    let records = csv_records(&out.join("table4.csv"));
    assert_eq!(
        records[0],
        [
            "seed", "dataset", "method", "steps", "fd", "fd_exact", "sw2", "nll", "mode_kl",
            "train_s"
        ]
    );
    let methods: Vec<&str> = records[1..].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        methods,
        [
            "exact samples (noise floor)",
            "teacher, aDDIM",
            "DDIM",
            "DDIM",
            "aDDIM",
            "aDDIM"
        ]
    );
    for r in &records[1..] {
        assert!(r[4].parse::<f64>().is_ok_and(f64::is_finite), "{r:?}");
        assert!(
            md.contains(&fmt3(r[4].parse().unwrap())),
            "{r:?} not in\n{md}"
        );
    }
    assert!(md.contains("exact samples (noise floor)"), "{md}");
    assert!(out.join("table4-fd.png").exists());
    assert!(out.join("ring8/samples/addim-s2.h5").exists());
    // Every student sampled with its own S.
    assert_eq!(attr(&out.join("ring8/samples/ddim-s1.h5"), "nfe"), "1");

    // A second run trains nothing and gives the same table.
    let (again, log) = ok_logged(&args);
    assert!(log.matches("reusing").count() == 5, "{log}");
    assert_eq!(md, again);

    assert!(err(&["reproduce", "table3", "--preset", "nope"]).contains("quick, hour, paper"));
    assert!(err(&["reproduce", "table4", "--scale", "0"]).contains("--scale"));
}

#[test]
fn reproduce_table2_compares_annealed_and_constant_teacher_steps() {
    use fewstep::reproduce::TABLE2;
    let dir = tempfile::tempdir().unwrap();
    let quick = TABLE2.iter().find(|p| p.0 == "quick").unwrap().1;
    let cfg = preset(dir.path(), "t2.toml", quick, |t| {
        t.insert("datasets".into(), toml::Value::Array(vec!["ring8".into()]));
        shrink(t, &[1]);
    });
    let out = dir.path().join("out");
    let md = ok(&["reproduce", "table2", "--config", p(&cfg), "--out", p(&out)]);
    assert!(
        md.contains("| Student steps | 64 -> 1280 | 128 | 256 | 1024 |"),
        "{md}"
    );
    assert!(
        md.contains("| 8 | 2.1 | 4.9 | 3.2 | 2.2 |"),
        "the paper's rows: {md}"
    );
    assert!(out.join("table2.csv").exists() && out.join("table2-fd.png").exists());
    // Each column's student ran with its own teacher steps: annealed, or one constant count.
    let folders: Vec<String> = std::fs::read_dir(out.join("ring8"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for (label, start, end) in [("128", 128, 128), ("256", 256, 256), ("1024", 1024, 1024)] {
        let run = out.join("ring8").join(format!("{label}-s1"));
        let config: toml::Table = std::fs::read_to_string(run.join("config.toml"))
            .unwrap_or_else(|e| panic!("{}: {e} (folders: {folders:?})", run.display()))
            .parse()
            .unwrap();
        let objective = config["objective"].as_table().unwrap();
        assert_eq!(objective["teacher_steps_start"].as_integer(), Some(start));
        assert_eq!(objective["teacher_steps_end"].as_integer(), Some(end));
    }
}

#[test]
fn reproduce_with_seeds_reports_mean_and_spread() {
    use fewstep::reproduce::distill::mean_std;
    use fewstep::reproduce::TABLE4;
    let dir = tempfile::tempdir().unwrap();
    let quick = TABLE4.iter().find(|p| p.0 == "quick").unwrap().1;
    let cfg = preset(dir.path(), "t4.toml", quick, |t| {
        t.insert("datasets".into(), toml::Value::Array(vec!["ring8".into()]));
        shrink(t, &[2]);
    });
    let out = dir.path().join("out");
    let md = ok(&[
        "reproduce",
        "table4",
        "--config",
        p(&cfg),
        "--out",
        p(&out),
        "--seeds",
        "3",
    ]);
    assert!(
        md.contains("mean +- standard deviation over the 3 seeds"),
        "{md}"
    );
    let records = csv_records(&out.join("table4.csv"));
    // Per seed: noise floor, baseline, 2 methods x 1 step.
    assert_eq!(records.len(), 1 + 3 * 4, "{records:?}");
    // Each seed trained its own runs, and each cell shows the mean +- std of its seeds' rows.
    for seed in 0..3 {
        assert!(out.join(format!("seed-{seed}/ring8/teacher")).is_dir());
    }
    for method in ["DDIM", "aDDIM"] {
        let fds: Vec<f64> = records[1..]
            .iter()
            .filter(|r| r[2] == method)
            .map(|r| r[4].parse().unwrap())
            .collect();
        assert_eq!(fds.len(), 3);
        assert!(fds[0] != fds[1], "seeds gave the same FD: {fds:?}");
        let (m, s) = mean_std(&fds);
        let shown = format!("{} ± {}", fmt3(m), fmt3(s));
        assert!(md.contains(&shown), "{shown} not in\n{md}");
    }
    assert!(err(&["reproduce", "figure1", "--seeds", "2"]).contains("--seeds"));
    assert!(err(&["reproduce", "table4", "--seeds", "0"]).contains("--seeds"));
}

/// Every record of a CSV file, header first, read with the `csv` crate (each as many fields
/// as the header).
fn csv_records(path: &Path) -> Vec<Vec<String>> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    rd.records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn reproduce_samplers_writes_a_csv_a_standard_reader_parses_and_its_plots() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("samplers.toml");
    // A sampler's label lists its settings that differ from the defaults; this aDDIM's holds a
    // comma and quotes: addim(eta=0.5,variance="exact").
    std::fs::write(
        &cfg,
        "datasets = [\"ring8\"]\nreference_n = 500\nn = 500\nnfe = [1, 2]\n\
         [[integrators]]\nname = \"ddim\"\n[[integrators]]\nname = \"addim\"\n\
         [[integrators]]\nname = \"addim\"\neta = 0.5\nvariance = \"exact\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let md = ok(&[
        "reproduce",
        "samplers",
        "--config",
        p(&cfg),
        "--out",
        p(&out),
    ]);
    let records = csv_records(&out.join("samplers.csv"));
    assert_eq!(
        records[0],
        [
            "dataset",
            "integrator",
            "steps",
            "nfe",
            "fd",
            "fd_exact",
            "sw2",
            "nll",
            "mode_kl"
        ]
    );
    let labels: Vec<&str> = records[1..].iter().map(|r| r[1].as_str()).collect();
    let exact = "addim(eta=0.5,variance=\"exact\")";
    assert_eq!(labels, ["ddim", "ddim", "addim", "addim", exact, exact]);
    for r in &records[1..] {
        assert_eq!(r[0], "ring8");
        assert!(md.contains(&r[1]), "{} not in\n{md}", r[1]);
        assert_eq!(r[2], r[3], "one network call per step: {r:?}");
        for v in &r[4..] {
            assert!(v.parse::<f64>().is_ok_and(f64::is_finite), "{r:?}");
        }
    }
    // Written atomically: nothing but the outputs (and the reference set) in the folder.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "data",
            "samplers-fd.png",
            "samplers-sw2.png",
            "samplers.csv",
            "samplers.md"
        ]
    );
    // Each plot decodes, one panel wide plus a legend of the short labels (the settings that
    // tell the two aDDIMs apart) and the floor.
    let legend: Vec<String> = [
        "ddim",
        "addim eta=0.75 analytic",
        "addim eta=0.5 exact",
        "floor",
    ]
    .map(String::from)
    .to_vec();
    let (w, h) = fewstep::plot::legend_margin(&legend);
    for name in ["samplers-fd.png", "samplers-sw2.png"] {
        let png = image::open(out.join(name)).unwrap();
        let size = (png.width(), png.height());
        let panel = fewstep::plot::PANEL;
        assert_eq!(size, (panel.0 + w, panel.1.max(h)), "{name}");
    }
}

#[test]
fn scale_multiplies_every_schedule_length() {
    use fewstep::reproduce::distill::{load, run_configs};
    use fewstep::reproduce::TABLE3;
    let dir = tempfile::tempdir().unwrap();
    let resolved = |scale: f64| -> Vec<toml::Table> {
        let c = load("table3", TABLE3, "paper", None, scale).unwrap();
        let runs = run_configs(&c, dir.path(), "gmm64").unwrap();
        runs.iter()
            .map(|r| fewstep::config::to_toml(r).unwrap().parse().unwrap())
            .collect()
    };
    let (full, small) = (resolved(1.0), resolved(0.01));
    let int = |t: &toml::Table, path: &[&str]| {
        let mut v = &t[path[0]];
        for k in &path[1..] {
            v = &v[k];
        }
        v.as_integer().unwrap()
    };
    // Teacher, then CT/CD (anneal_iters), PD (iters_per_round) students: 100 times shorter.
    for (f, s) in full.iter().zip(&small) {
        assert_eq!(int(s, &["steps"]), int(f, &["steps"]) / 100);
        assert_eq!(
            int(s, &["checkpoint_every"]),
            (int(f, &["checkpoint_every"]) / 100).max(1)
        );
    }
    assert_eq!(int(&small[0], &["steps"]), 1000);
    let method = |t: &toml::Table| t["objective"]["name"].as_str().unwrap().to_string();
    let cd = small.iter().find(|t| method(t) == "multistep-cd").unwrap();
    assert_eq!(int(cd, &["objective", "anneal_iters"]), 1000);
    let pd = small.iter().find(|t| method(t) == "progressive").unwrap();
    assert_eq!(int(pd, &["objective", "iters_per_round"]), 333);
    // Not scaled: the number of teacher steps of the grid.
    assert_eq!(int(cd, &["objective", "teacher_steps_end"]), 1280);
    let e = err(&["reproduce", "table3", "--scale=-1"]);
    assert!(
        e.contains("'--scale <SCALE>': expected a number > 0 and <= 1000"),
        "{e}"
    );
    // The preset's `scale` and --scale together stay in range too.
    let mut c = fewstep::reproduce::distill::load("table3", TABLE3, "quick", None, 500.0).unwrap();
    assert_eq!(c.scale, 500.0);
    c.scale = 3.0;
    let e = fewstep::reproduce::distill::scale_config(&mut c, 500.0).unwrap_err();
    assert!(e.to_string().contains("`scale` x --scale"), "{e}");
    assert_eq!(c.scale, 3.0, "a refused factor changes nothing");
}

#[test]
fn reproduce_figure1_draws_trajectories() {
    use fewstep::reproduce::FIGURE1;
    let dir = tempfile::tempdir().unwrap();
    let quick = FIGURE1.iter().find(|p| p.0 == "quick").unwrap().1;
    let cfg = preset(dir.path(), "f1.toml", quick, |t| {
        t.insert("exact_steps".into(), 32.into());
        shrink(t["table"].as_table_mut().unwrap(), &[1, 2, 4]);
    });
    let out = dir.path().join("out");
    let md = ok(&[
        "reproduce",
        "figure1",
        "--config",
        p(&cfg),
        "--out",
        p(&out),
    ]);
    assert!(md.contains("| Student steps | CD |"), "{md}");
    let png = image::open(out.join("figure1.png")).unwrap();
    // Four panels: 1, 2, 4 steps and DDIM.
    assert_eq!(png.width(), 4 * 360);
}

#[test]
fn plot_labels_of_samplers_are_short_and_tell_the_rows_apart() {
    use fewstep::reproduce::samplers::{load, short_labels};
    // The quick preset's real rows.
    let cfg = load("quick", None).unwrap();
    let short = short_labels(&cfg.integrators).unwrap();
    assert_eq!(short.len(), cfg.integrators.len());
    for (i, a) in short.iter().enumerate() {
        assert!(a.chars().count() <= 24, "{a} is long");
        assert!(!short[i + 1..].contains(a), "{a} twice in {short:?}");
    }
    assert!(
        short.contains(&"dpm-solver++ order=3".to_string()),
        "{short:?}"
    );
    assert!(short.contains(&"unipc bh1".to_string()), "{short:?}");
    assert!(short.contains(&"ddim".to_string()), "{short:?}");

    // Only the settings that differ between rows of one name, strings without their key;
    // past 24 characters every value stands alone. A lone integrator is its name.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[[integrators]]\nname = \"addim\"\n         [[integrators]]\nname = \"addim\"\neta = 0.5\nvariance = \"exact\"\n         [[integrators]]\nname = \"addim\"\neta = 0.123456789\n         [[integrators]]\nname = \"dpm-solver++\"\norder = 3\n",
    )
    .unwrap();
    let cfg = load("quick", Some(&path)).unwrap();
    assert_eq!(
        short_labels(&cfg.integrators).unwrap(),
        [
            "addim eta=0.75 analytic",
            "addim eta=0.5 exact",
            "addim 0.123456789 analytic",
            "dpm-solver++"
        ]
    );
}

/// The hour presets of table2/3/4 share their teacher and student settings, so run into one
/// `--out` a student they share (CD annealed 64 -> 1280 with aDDIM) trains once: the later
/// tables link the earlier table's run folder and score the same samples.
#[test]
fn hour_presets_share_their_runs_across_tables() {
    use fewstep::reproduce::{TABLE2, TABLE3, TABLE4};
    let hour = |presets: &[(&str, &str)]| -> toml::Table {
        presets
            .iter()
            .find(|p| p.0 == "hour")
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let (t2, t3, t4) = (hour(TABLE2), hour(TABLE3), hour(TABLE4));
    for key in ["teacher", "student", "datasets", "data_n", "seed"] {
        assert_eq!(t2[key], t3[key], "{key}");
        assert_eq!(t4[key], t3[key], "{key}");
    }
    assert_eq!(t3["student"]["batch"].as_integer(), Some(1024));
    assert_eq!(t3["student"]["steps"].as_integer(), Some(2000));
    assert_eq!(t3["teacher"]["denoiser"]["width"].as_integer(), Some(512));
    // Every run of every hour table resolves, and each student trains 2000 iterations; PD's
    // 1-step student reaches its sixth round within them (a shorter run is refused).
    let tmp = tempfile::tempdir().unwrap();
    for (what, presets) in [("table2", TABLE2), ("table3", TABLE3), ("table4", TABLE4)] {
        let c = fewstep::reproduce::distill::load(what, presets, "hour", None, 1.0).unwrap();
        for dataset in ["gmm64", "ring8"] {
            let runs = fewstep::reproduce::distill::run_configs(&c, tmp.path(), dataset).unwrap();
            for run in &runs[1..] {
                assert_eq!(run.steps, 2000, "{what} {}", run.out.display());
                run.check_reaches_last_round().unwrap();
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let small = |name: &str, mut t: toml::Table, keep: &[&str]| {
        let methods = t["methods"].as_array_mut().unwrap();
        methods.retain(|m| keep.contains(&m["label"].as_str().unwrap()));
        preset(dir.path(), name, &toml::to_string(&t).unwrap(), |t| {
            shrink(t, &[1])
        })
    };
    let out = dir.path().join("out");
    // The presets list gmm64 and ring8; --datasets runs ring8 alone.
    let run = |what: &str, cfg: &Path| {
        let args = ["reproduce", what, "--config", p(cfg), "--datasets", "ring8"];
        ok_logged(&[&args[..], &["--out", p(&out)]].concat())
    };
    let (md3, _) = run("table3", &small("t3.toml", t3, &["CT", "CD"]));
    let (md4, log4) = run("table4", &small("t4.toml", t4, &["DDIM", "aDDIM"]));
    let (_, log2) = run("table2", &small("t2.toml", t2, &["64 -> 1280", "128"]));
    assert!(!out.join("gmm64").exists() && !out.join("data/gmm64.h5").exists());
    let cd = out.join("ring8/cd-s1");
    for (log, label, folder) in [
        (&log4, "aDDIM", "addim-s1"),
        (&log2, "64 -> 1280", "64----1280-s1"),
    ] {
        let linked = out.join("ring8").join(folder);
        assert!(
            log.contains(&format!("{label} S=1: the same run as {}", cd.display())),
            "{log}"
        );
        assert_eq!(std::fs::read_link(&linked).unwrap(), PathBuf::from("cd-s1"));
    }
    // Students with another config are trained, not linked.
    let linked = |log: &str, what: &str| log.lines().any(|l| l.starts_with(what));
    assert!(!linked(&log4, "DDIM S=1: the same run"), "{log4}");
    assert!(!linked(&log2, "128 S=1: the same run"), "{log2}");
    assert!(out
        .join("ring8/128-s1")
        .symlink_metadata()
        .unwrap()
        .is_dir());
    // The linked student scores what table3's CD did (same checkpoint, same sampling seed).
    let fd = |md: &str, label: &str| {
        let records = csv_records(&out.join(format!("{md}.csv")));
        records
            .iter()
            .find(|r| r[2] == label && r[3] == "1")
            .unwrap_or_else(|| panic!("{label} in {records:?}"))[4]
            .clone()
    };
    assert_eq!(fd("table3", "CD"), fd("table4", "aDDIM"), "{md3}\n{md4}");
    assert_eq!(fd("table3", "CD"), fd("table2", "64 -> 1280"));
}
