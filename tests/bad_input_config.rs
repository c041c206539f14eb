//! Bad configs and flags across the commands (issue 15): every case must fail with exit code 1
//! or 2 and one readable line that names the config file (when one was given), the key path
//! outside-in, and the valid choices, leaving every file in the folder as it was.

mod common;

use common::{check_bad_case, fewstep, BadCase};
use std::path::Path;

/// Config files the cases pass with `--config`: (file name, content).
const CONFIGS: &[(&str, &str)] = &[
    ("variance.toml", "[integrator]\nname = \"addim\"\nvariance = \"x\"\n"),
    ("string-plugin.toml", "integrator = \"addim\"\n"),
    ("eta.toml", "[integrator]\nname = \"addim\"\neta = -1\n"),
    ("top-field.toml", "foo = 1\n"),
    ("karras-field.toml", "[schedule]\nname = \"karras\"\nsigma_minn = 1\n"),
    ("malformed.toml", "steps = 8\nn = [\n"),
    ("steps.toml", "steps = -4\n"),
    ("n-string.toml", "n = \"many\"\n"),
    ("seed-float.toml", "seed = 1.5\n"),
    ("schedule-string.toml", "schedule = \"cosine\"\n"),
    ("no-name.toml", "[integrator]\neta = 0.5\n"),
    ("unipc.toml", "[integrator]\nname = \"unipc\"\nvariant = \"bh3\"\n"),
    ("dpm-order.toml", "[integrator]\nname = \"dpm-solver++\"\norder = 4\n"),
    ("karras-min.toml", "[schedule]\nname = \"karras\"\nsigma_min = -1\n"),
    ("steps-array.toml", "steps = [1, 2]\n"),
    ("corrector.toml", "[integrator]\nname = \"unipc\"\ncorrector = \"yes\"\n"),
    ("train-objective.toml", "[objective]\nname = \"difusion\"\n"),
    ("train-lr.toml", "lr = \"fast\"\n"),
    ("train-mlp.toml", "[denoiser]\nname = \"mlp\"\nwidht = 64\n"),
    ("train-base.toml", "[schedule]\nname = \"shifted-cosine\"\nbase = -64\n"),
    ("train-field.toml", "stepz = 10\n"),
    ("distill-objective.toml", "[teacher_denoiser]\nname = \"gmm\"\n\n[objective]\nname = \"multistep-cd\"\nstudent_stepz = 4\n"),
    ("reproduce-field.toml", "nope = 1\n"),
    // Ranges checked on the built config (issue 15): each error names the file, field and value.
    ("batch-zero.toml", "batch = 0\n"),
    ("sample-steps-zero.toml", "steps = 0\n"),
    ("train-lr-negative.toml", "lr = -0.5\n"),
    ("train-ema.toml", "ema_decay = 1.0\n"),
    ("train-lr-final.toml", "lr_final = 2.0\n"),
    ("train-clip.toml", "grad_clip = -1.0\n"),
    ("train-log-every.toml", "log_every = 0\n"),
    ("karras-order.toml", "[schedule]\nname = \"karras\"\nsigma_min = 5.0\nsigma_max = 1.0\n"),
    ("train-max-weight.toml", "[objective]\nname = \"diffusion\"\nmax_weight = 0.0\n"),
    ("pd-teacher-steps.toml", "[teacher_denoiser]\nname = \"gmm\"\n\n[denoiser]\nname = \"mlp\"\n\n[objective]\nname = \"progressive\"\nstudent_steps = 8\nteacher_steps = 12\n"),
    ("pd-teacher-at-s.toml", "[teacher_denoiser]\nname = \"gmm\"\n\n[denoiser]\nname = \"mlp\"\n\n[objective]\nname = \"progressive\"\nstudent_steps = 8\nteacher_steps = 8\n"),
    ("datasets-nope.toml", "datasets = [\"ring8\", \"nope\"]\n"),
    ("reproduce-pd-rounds.toml", "student_steps = [1]\n\n[[methods]]\nlabel = \"PD\"\n[methods.objective]\nname = \"progressive\"\nteacher_steps = 64\niters_per_round = 700\n"),
    ("cd-student-steps.toml", "[teacher_denoiser]\nname = \"gmm\"\n\n[denoiser]\nname = \"mlp\"\n\n[objective]\nname = \"multistep-cd\"\nstudent_steps = 16\nteacher_steps_start = 8\n"),
    ("cd-table.toml", "[teacher_denoiser]\nname = \"gmm\"\n\n[denoiser]\nname = \"mlp\"\n\n[objective]\nname = \"multistep-cd\"\n\n[objective.teacher_integrator]\nname = \"addim\"\nvariance = \"table\"\n"),
    ("reproduce-scale.toml", "scale = 1e30\n"),
    ("reproduce-scale-product.toml", "scale = 100.0\n"),
    ("reproduce-data-n.toml", "data_n = 0\n"),
    ("reproduce-student-steps.toml", "student_steps = [1, 0]\n"),
    ("samplers-nfe.toml", "nfe = [4, 0]\n"),
];

fn case<'a>(what: &'a str, args: &str, names: &[&'a str]) -> BadCase<'a> {
    BadCase {
        what,
        args: args.split_whitespace().map(str::to_string).collect(),
        names: names.to_vec(),
    }
}

/// The table: (what, command line, what the error must name).
fn cases() -> Vec<BadCase<'static>> {
    const S: &str = "sample --data ring8.h5 --denoiser gmm --out s.h5";
    let sample = |extra: &str| format!("{S} {extra}");
    let rows: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "nested unknown variant",
            sample("--config variance.toml"),
            vec![
                "variance.toml: integrator.variance: unknown variant \"x\"",
                "valid: analytic, exact, table",
            ],
        ),
        (
            "plugin given as a string",
            sample("--config string-plugin.toml"),
            vec![
                "string-plugin.toml: integrator: expected a table like { name = \"addim\", ... }",
                "valid names: addim, ddim",
            ],
        ),
        (
            "plugin field before `name` out of range",
            sample("--config eta.toml"),
            vec!["eta.toml: integrator.eta: expected a finite number >= 0, got -1"],
        ),
        (
            "unknown top-level key",
            sample("--config top-field.toml"),
            vec![
                "top-field.toml: unknown field \"foo\"",
                "valid: schedule, integrator",
            ],
        ),
        (
            "unknown plugin field",
            sample("--config karras-field.toml"),
            vec![
                "karras-field.toml: schedule: unknown field \"sigma_minn\"",
                "valid: sigma_min, sigma_max, rho",
            ],
        ),
        (
            "malformed TOML",
            sample("--config malformed.toml"),
            vec!["malformed.toml", "line 2, column 6"],
        ),
        (
            "missing config file",
            sample("--config missing.toml"),
            vec!["missing.toml"],
        ),
        (
            "negative steps in a file",
            sample("--config steps.toml"),
            vec!["steps.toml: steps: expected a whole number >= 0, got -4"],
        ),
        (
            "string for a count",
            sample("--config n-string.toml"),
            vec!["n-string.toml: n: expected a whole number >= 0, got string \"many\""],
        ),
        (
            "float for a seed",
            sample("--config seed-float.toml"),
            vec!["seed-float.toml: seed:", "1.5"],
        ),
        (
            "schedule given as a string",
            sample("--config schedule-string.toml"),
            vec![
                "schedule-string.toml: schedule: expected a table like { name = \"cosine\", ... }",
                "karras",
            ],
        ),
        (
            "plugin table without a name",
            sample("--config no-name.toml"),
            vec!["no-name.toml: integrator: missing field `name`"],
        ),
        (
            "unknown enum value in a plugin",
            sample("--config unipc.toml"),
            vec![
                "unipc.toml: integrator.variant: unknown variant \"bh3\"",
                "bh1",
            ],
        ),
        (
            "solver order out of range",
            sample("--config dpm-order.toml"),
            vec!["dpm-order.toml: integrator.order:", "1, 2 or 3"],
        ),
        (
            "schedule bound out of range",
            sample("--config karras-min.toml"),
            vec!["karras-min.toml: schedule.sigma_min:", "got -1"],
        ),
        (
            "array for a count",
            sample("--config steps-array.toml"),
            vec!["steps-array.toml: steps:", "sequence"],
        ),
        (
            "string for a boolean",
            sample("--config corrector.toml"),
            vec!["corrector.toml: integrator.corrector: expected true or false"],
        ),
        (
            "unknown integrator flag",
            sample("--integrator addimm"),
            vec![
                "integrator.name: unknown variant \"addimm\"",
                "valid: addim, ddim",
            ],
        ),
        (
            "unknown schedule flag",
            sample("--schedule cosinus"),
            vec!["schedule.name: unknown variant \"cosinus\"", "cosine"],
        ),
        (
            "unknown denoiser flag",
            "sample --data ring8.h5 --out s.h5 --denoiser gmmm".into(),
            vec!["denoiser.name: unknown variant \"gmmm\"", "gmm"],
        ),
        (
            "negative --steps",
            sample("--steps -4"),
            vec!["--steps", ">= 0, got -4"],
        ),
        (
            "--n above i64",
            sample("--n 18446744073709551615"),
            vec!["--n", "18446744073709551615 is too large"],
        ),
        (
            "negative --seed",
            sample("--seed -1"),
            vec!["--seed", "got -1"],
        ),
        (
            "negative --batch",
            sample("--batch -2"),
            vec!["--batch", "got -2"],
        ),
        ("non-number --n", sample("--n ten"), vec!["--n", "\"ten\""]),
        (
            "train: unknown objective",
            "train --data ring8.h5 --out r --config train-objective.toml".into(),
            vec![
                "train-objective.toml: objective.name: unknown variant \"difusion\"",
                "diffusion",
            ],
        ),
        (
            "train: string for lr",
            "train --data ring8.h5 --out r --config train-lr.toml".into(),
            vec!["train-lr.toml: lr: expected a number"],
        ),
        (
            "train: unknown network field",
            "train --data ring8.h5 --out r --config train-mlp.toml".into(),
            vec!["train-mlp.toml: denoiser: unknown field \"widht\"", "width"],
        ),
        (
            "train: base out of range",
            "train --data ring8.h5 --out r --config train-base.toml".into(),
            vec!["train-base.toml: schedule.base:", "-64"],
        ),
        (
            "train: unknown key",
            "train --data ring8.h5 --out r --config train-field.toml".into(),
            vec!["train-field.toml: unknown field \"stepz\"", "steps"],
        ),
        (
            "train: negative --steps",
            "train --data ring8.h5 --out r --steps -5".into(),
            vec!["--steps", "got -5"],
        ),
        (
            "train: negative --batch",
            "train --data ring8.h5 --out r --batch -1".into(),
            vec!["--batch", "got -1"],
        ),
        (
            "distill: negative --student-steps",
            "distill --teacher r --out s --student-steps -1".into(),
            vec!["--student-steps", "got -1"],
        ),
        (
            "distill: unknown objective field",
            "distill --data ring8.h5 --out s --config distill-objective.toml".into(),
            vec![
                "distill-objective.toml: objective: unknown field \"student_stepz\"",
                "student_steps",
            ],
        ),
        (
            "data make: negative --n",
            "data make ring8 --n -3 --out x.h5".into(),
            vec!["--n", "got -3"],
        ),
        (
            "data make: negative --seed",
            "data make ring8 --seed -3 --out x.h5".into(),
            vec!["--seed", "got -3"],
        ),
        (
            "data make: unknown set",
            "data make ring9 --out x.h5".into(),
            vec!["ring9", "ring8"],
        ),
        (
            "calibrate: negative --points",
            "calibrate --points -1".into(),
            vec!["--points", "got -1"],
        ),
        (
            "bench train: negative --batch",
            "bench train --batch -1".into(),
            vec!["--batch", "got -1"],
        ),
        (
            "list: unknown kind",
            "list schedules".into(),
            vec!["schedules", "valid kinds: schedule"],
        ),
        (
            "reproduce: unknown dataset on the command line",
            "reproduce table3 --datasets ring8,nope".into(),
            vec![
                "--datasets: unknown built-in dataset `nope`",
                "valid names: two-modes, ring8, gmm64, shapes16, shapes32",
            ],
        ),
        (
            "reproduce: unknown dataset in a config",
            "reproduce table3 --config datasets-nope.toml".into(),
            vec![
                "datasets-nope.toml: datasets: unknown built-in dataset `nope`",
                "valid names: two-modes",
            ],
        ),
        (
            "reproduce: --datasets on samplers",
            "reproduce samplers --datasets ring8".into(),
            vec!["--seeds and --datasets apply to table2, table3 and table4, not samplers"],
        ),
        (
            "reproduce: unknown preset",
            "reproduce table3 --preset fast".into(),
            vec!["fast", "quick, hour, paper"],
        ),
        (
            "sample: zero batch in a file",
            sample("--config batch-zero.toml"),
            vec!["batch-zero.toml: batch: expected a whole number >= 1, got 0"],
        ),
        (
            "sample: zero steps in a file",
            sample("--config sample-steps-zero.toml"),
            vec!["sample-steps-zero.toml: steps: expected a whole number >= 1, got 0"],
        ),
        (
            "sample: zero --n",
            sample("--n 0"),
            vec!["n: expected a whole number >= 1, got 0"],
        ),
        (
            "sample: schedule bounds in the wrong order",
            sample("--config karras-order.toml"),
            vec!["karras-order.toml: schedule.sigma_min: 5 must be below sigma_max = 1"],
        ),
        (
            "train: zero batch in a file",
            "train --data ring8.h5 --out r --config batch-zero.toml".into(),
            vec!["batch-zero.toml: batch: expected a whole number >= 1, got 0"],
        ),
        (
            "train: zero --steps",
            "train --data ring8.h5 --out r --steps 0".into(),
            vec!["steps: expected a whole number >= 1, got 0"],
        ),
        (
            "train: negative lr",
            "train --data ring8.h5 --out r --config train-lr-negative.toml".into(),
            vec!["train-lr-negative.toml: lr: expected a finite number > 0, got -0.5"],
        ),
        (
            "train: ema_decay of 1",
            "train --data ring8.h5 --out r --config train-ema.toml".into(),
            vec!["train-ema.toml: ema_decay: expected a number in [0, 1), got 1"],
        ),
        (
            "train: lr_final above 1",
            "train --data ring8.h5 --out r --config train-lr-final.toml".into(),
            vec!["train-lr-final.toml: lr_final: expected a number in [0, 1], got 2"],
        ),
        (
            "train: negative grad_clip",
            "train --data ring8.h5 --out r --config train-clip.toml".into(),
            vec!["train-clip.toml: grad_clip: expected a finite number >= 0, got -1"],
        ),
        (
            "train: zero log_every",
            "train --data ring8.h5 --out r --config train-log-every.toml".into(),
            vec!["train-log-every.toml: log_every: expected a whole number >= 1, got 0"],
        ),
        (
            "train: zero max_weight in the objective",
            "train --data ring8.h5 --out r --config train-max-weight.toml".into(),
            vec!["train-max-weight.toml: objective.max_weight:", "got 0"],
        ),
        (
            "distill: progressive teacher_steps not S x 2^k",
            "distill --data ring8.h5 --out s --config pd-teacher-steps.toml".into(),
            vec![
                "pd-teacher-steps.toml: objective.teacher_steps: 12 is not student_steps = 8",
                "valid: 16, 32, 64",
            ],
        ),
        (
            "distill: progressive teacher_steps at S (no round)",
            "distill --data ring8.h5 --out s --config pd-teacher-at-s.toml".into(),
            vec![
                "pd-teacher-at-s.toml: objective.teacher_steps: 8 is not student_steps = 8",
                "valid: 16",
            ],
        ),
        (
            "distill: progressive teacher_steps against --student-steps",
            "distill --data ring8.h5 --out s --config pd-teacher-steps.toml --student-steps 5"
                .into(),
            vec![
                "pd-teacher-steps.toml: objective.teacher_steps: 12 is not student_steps = 5",
                "valid: 10, 20",
            ],
        ),
        (
            "distill: more student steps than teacher steps",
            "distill --data ring8.h5 --out s --config cd-student-steps.toml".into(),
            vec![
                "cd-student-steps.toml: objective.student_steps: 16 exceeds",
                "teacher_steps_start = 8",
            ],
        ),
        (
            "distill: aDDIM table variance without a table",
            "distill --data ring8.h5 --out s --config cd-table.toml".into(),
            vec!["cd-table.toml: objective.teacher_integrator.variance: \"table\" needs"],
        ),
        (
            "distill: zero --student-steps",
            "distill --data ring8.h5 --out s --config cd-table.toml --student-steps 0".into(),
            vec!["--student-steps 0: student_steps: expected a whole number >= 1, got 0"],
        ),
        (
            "reproduce: --scale 1e30",
            "reproduce table4 --scale 1e30 --out o".into(),
            vec!["--scale", "expected a number > 0 and <= 1000"],
        ),
        (
            "reproduce: --scale NaN",
            "reproduce table4 --scale NaN --out o".into(),
            vec!["--scale", "> 0 and <= 1000", "got NaN"],
        ),
        (
            "reproduce: --scale inf",
            "reproduce table3 --scale inf --out o".into(),
            vec!["--scale", "> 0 and <= 1000", "got inf"],
        ),
        (
            "reproduce: --scale 0",
            "reproduce figure1 --scale 0 --out o".into(),
            vec!["--scale", "> 0 and <= 1000", "got 0"],
        ),
        (
            "reproduce: negative --scale",
            "reproduce table4 --scale -2 --out o".into(),
            vec!["--scale", "> 0 and <= 1000", "got -2"],
        ),
        (
            "reproduce: --scale a word",
            "reproduce table4 --scale big --out o".into(),
            vec!["--scale", "expected a number, got \"big\""],
        ),
        (
            "reproduce: `scale` 1e30 in a file",
            "reproduce table4 --config reproduce-scale.toml --out o".into(),
            vec!["reproduce-scale.toml: scale: expected a number > 0 and <= 1000"],
        ),
        (
            "reproduce: `scale` x --scale above the range",
            "reproduce table4 --config reproduce-scale-product.toml --scale 20 --out o".into(),
            vec![
                "`scale` x --scale: expected a number > 0 and <= 1000",
                "got 2000",
            ],
        ),
        (
            "reproduce: zero data_n",
            "reproduce table4 --config reproduce-data-n.toml --out o".into(),
            vec!["reproduce-data-n.toml: data_n: expected a whole number >= 1, got 0"],
        ),
        (
            "reproduce: a zero in student_steps",
            "reproduce table3 --config reproduce-student-steps.toml --out o".into(),
            vec!["reproduce-student-steps.toml: student_steps:", "[1, 0]"],
        ),
        (
            // Six rounds of 700 from 64 teacher steps: the preset's 1200 student iterations stop
            // in round 2, whose student takes 16 steps; the table would list it as the 1-step
            // student. Refused before the teacher trains (`distill` allows such a run).
            "reproduce: progressive rounds too long for the student run",
            "reproduce table3 --config reproduce-pd-rounds.toml --out o".into(),
            vec![
                "the student of method `PD` with 1 steps: steps: 1200 steps end in round 2 of \
                 the objective, whose student takes 16 steps; the round that trains its 1-step \
                 student starts at step 3500",
            ],
        ),
        (
            "reproduce samplers: a zero NFE budget",
            "reproduce samplers --config samplers-nfe.toml --out o".into(),
            vec!["samplers-nfe.toml: nfe:", "[4, 0]"],
        ),
        (
            "calibrate: NaN --eta",
            "calibrate --checkpoint r --data ring8.h5 --eta NaN".into(),
            vec!["--eta", "expected a finite number >= 0, got NaN"],
        ),
        (
            "calibrate: negative --eta",
            "calibrate --checkpoint r --data ring8.h5 --eta -0.5".into(),
            vec!["--eta", "got -0.5"],
        ),
        (
            "reproduce samplers: unknown key",
            "reproduce samplers --config reproduce-field.toml --out o".into(),
            vec!["reproduce-field.toml: unknown field \"nope\""],
        ),
        (
            "reproduce table4: unknown key",
            "reproduce table4 --config reproduce-field.toml --out o".into(),
            vec!["reproduce-field.toml: unknown field \"nope\""],
        ),
    ];
    rows.into_iter()
        .map(|(what, args, names)| {
            let mut c = case(what, "", &names);
            c.args = args.split_whitespace().map(str::to_string).collect();
            c
        })
        .collect()
}

/// The folder every case runs in: a small ring8 dataset and the config files.
fn fixtures(dir: &Path) {
    let o = fewstep(&[
        "data",
        "make",
        "ring8",
        "--n",
        "300",
        "--out",
        dir.join("ring8.h5").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (name, text) in CONFIGS {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// [`check_bad_case`], and the names on the error's first line, which is the whole message
/// unless clap added its usage hint.
fn check_one_line(dir: &Path, case: &BadCase) {
    check_bad_case(dir, case);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args(&case.args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    for name in &case.names {
        assert!(
            first.contains(name),
            "{}: first line lacks {name:?}: {stderr}",
            case.what
        );
    }
    if !stderr.contains("For more information, try '--help'") {
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{}: not one line: {stderr}",
            case.what
        );
    }
}

#[test]
fn bad_configs_and_flags_get_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("fewstep-bad-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    fixtures(&dir);
    let cases = cases();
    assert!(cases.len() >= 35, "{} cases", cases.len());
    // Every case runs; the failures are reported together.
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            std::panic::catch_unwind(|| check_one_line(&dir, case))
                .err()
                .map(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| case.what.to_string())
                })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `fewstep config CMD` prints every setting with its default, as a config file the command
/// reads back.
#[test]
fn config_prints_resolved_defaults_that_read_back() {
    let train = String::from_utf8(fewstep(&["config", "train"]).stdout).unwrap();
    let t: toml::Table = train.parse().unwrap();
    assert_eq!(t["checkpoint_every"].as_integer(), Some(1000), "{train}");
    assert_eq!(t["denoiser"]["width"].as_integer(), Some(512), "{train}");
    assert!(!t.contains_key("data"), "{train}");
    let distill = String::from_utf8(fewstep(&["config", "distill"]).stdout).unwrap();
    let d: toml::Table = distill.parse().unwrap();
    assert_eq!(d["objective"]["name"].as_str(), Some("multistep-cd"));
    assert!(!d.contains_key("denoiser"), "{distill}");

    let dir = std::env::temp_dir().join(format!("fewstep-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    fixtures(&dir);
    let sample = fewstep(&["config", "sample"]).stdout;
    std::fs::write(dir.join("sample.toml"), sample).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args([
            "sample",
            "--config",
            "sample.toml",
            "--data",
            "ring8.h5",
            "--n",
            "64",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.join("samples.h5").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    let e = String::from_utf8(fewstep(&["config", "eval"]).stderr).unwrap();
    assert!(e.contains("train, distill, sample"), "{e}");
}

/// With stderr not a terminal (here a pipe), long jobs print plain progress lines: the count, the
/// rate and the time left (every 5 s by default; the interval is 0 here).
#[test]
fn progress_lines_when_stderr_is_not_a_terminal() {
    let dir = std::env::temp_dir().join(format!("fewstep-progress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    fixtures(&dir);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args([
            "sample", "--data", "ring8.h5", "--n", "4000", "--batch", "500",
        ])
        .env("FEWSTEP_PROGRESS_EVERY", "0")
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("sampling: "))
        .unwrap_or_else(|| panic!("no progress line: {stderr}"));
    assert!(
        line.contains("/4000") && line.contains("/s") && line.contains("eta"),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `fewstep list` says field types in words, not raw schema types.
#[test]
fn list_says_types_in_words() {
    let list = String::from_utf8(fewstep(&["list", "integrator"]).stdout).unwrap();
    assert!(list.contains("table (text, optional):"), "{list}");
    assert!(
        list.contains("variance (analytic | exact | table):"),
        "{list}"
    );
    assert!(list.contains("order (whole number):"), "{list}");
    assert!(list.contains("corrector (true or false):"), "{list}");
    assert!(!list.contains("[string,null]"), "{list}");
}
