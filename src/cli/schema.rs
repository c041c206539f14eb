//! `fewstep schema`: a JSON Schema per config file kind, for editors and CI.

use crate::schema::{metadata, reference, ConfigKind};
use anyhow::{bail, Result};
use clap::CommandFactory;
use std::path::PathBuf;

/// `(path, text)` of a defaults file under `configs/`, for [`ConfigKind::of`].
macro_rules! defaults {
    ($file:literal) => {
        (
            concat!("configs/", $file),
            include_str!(concat!("../../configs/", $file)),
        )
    };
}

/// Every kind of config file that gets a schema. Adding one is one line here:
/// `ConfigKind::of::<Config>("<kind>.schema.json", defaults!("<defaults>.toml"))`, with
/// `.command("<subcommand>")` when that subcommand's flags set the same keys (and their help
/// shows the same defaults); then `fewstep schema --out schemas/ --markdown
/// docs/config-reference.md` and commit the new files. The kind is the command that reads the
/// file, its words joined by `-` (`reproduce-table3` for `fewstep reproduce table3 --config`).
pub fn config_kinds() -> Vec<ConfigKind> {
    use crate::reproduce::{distill::TableConfig, figure1::Figure1Config};
    vec![
        ConfigKind::of::<crate::run::sample::SampleConfig>(
            "sample.schema.json",
            defaults!("sample.toml"),
        )
        .command("sample"),
        ConfigKind::of::<crate::train::TrainConfig>("train.schema.json", defaults!("train.toml"))
            .command("train"),
        // The same config as `train`, on other defaults; the student's network and data come
        // from the teacher. (Not `.command("distill")`: its shared flags' help names train's
        // defaults first.)
        ConfigKind::of::<crate::train::TrainConfig>(
            "distill.schema.json",
            defaults!("distill.toml"),
        )
        .filled_in(
            &["data", "denoiser"],
            "the teacher checkpoint's (`fewstep distill --teacher`)",
        ),
        ConfigKind::of::<crate::reproduce::samplers::SamplersConfig>(
            "reproduce-samplers.schema.json",
            defaults!("reproduce/samplers-quick.toml"),
        ),
        // A --config file is layered on the chosen preset: the defaults shown are the quick one's.
        ConfigKind::of::<TableConfig>(
            "reproduce-table2.schema.json",
            defaults!("reproduce/table2-quick.toml"),
        ),
        ConfigKind::of::<TableConfig>(
            "reproduce-table3.schema.json",
            defaults!("reproduce/table3-quick.toml"),
        ),
        ConfigKind::of::<TableConfig>(
            "reproduce-table4.schema.json",
            defaults!("reproduce/table4-quick.toml"),
        ),
        ConfigKind::of::<Figure1Config>(
            "reproduce-figure1.schema.json",
            defaults!("reproduce/figure1-quick.toml"),
        ),
    ]
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for the schemas, one `<kind>.schema.json` per config file kind.
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
    /// Write nothing; fail if a schema in --out (or the --markdown file) differs from what the
    /// linked-in plugins give.
    #[arg(long)]
    pub check: bool,
    /// Also write the markdown configuration reference generated from the schemas, e.g.
    /// docs/config-reference.md (its links assume it sits in docs/, beside schemas/ and configs/).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    #[command(flatten)]
    pub force: super::Force,
}

pub fn run(a: Args) -> Result<()> {
    let kinds = config_kinds();
    let mut files = vec![];
    for kind in &kinds {
        files.push((a.out.join(kind.file), render(kind)?));
    }
    if let Some(path) = &a.markdown {
        files.push((path.clone(), markdown(&kinds, &files)?));
    }
    let stale: Vec<String> = files
        .iter()
        .filter(|(path, text)| std::fs::read_to_string(path).ok().as_deref() != Some(text))
        .map(|(path, _)| path.display().to_string())
        .collect();
    if !a.check {
        crate::output::check_folder("--out", &a.out)?;
        // Every target checked before the first is written; an unchanged file is left alone.
        let changed: Vec<_> = files
            .iter()
            .filter(|(path, _)| stale.contains(&path.display().to_string()))
            .collect();
        for (path, _) in &changed {
            let flag = match &a.markdown {
                Some(m) if m == path => "--markdown",
                _ => "--out",
            };
            crate::output::check_target(flag, path, a.force.force, &[])?;
        }
        for (path, text) in changed {
            crate::output::write_bytes(path, text.as_bytes())?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    if !stale.is_empty() {
        let markdown = match &a.markdown {
            Some(p) => format!(" --markdown {}", p.display()),
            None => String::new(),
        };
        bail!(
            "out of date with the registered plugins: {}; regenerate with `cargo run -- schema \
             --out {}{markdown} --force`",
            stale.join(", "),
            a.out.display()
        );
    }
    Ok(())
}

/// The configuration reference from the rendered schemas (`(path, text)`, one per kind first).
fn markdown(kinds: &[ConfigKind], rendered: &[(PathBuf, String)]) -> Result<String> {
    let mut schemas = vec![];
    for (kind, (_, text)) in kinds.iter().zip(rendered) {
        schemas.push((kind, serde_json::from_str(text)?));
    }
    Ok(reference::markdown(&schemas))
}

/// The schema file's text: the config's schema with its defaults, and each field without a
/// doc comment described by the help of the flag of the same name.
pub fn render(kind: &ConfigKind) -> Result<String> {
    let mut root = kind.file_schema()?;
    if let Some(name) = kind.command {
        let cli = super::Cli::command();
        let Some(cmd) = cli.find_subcommand(name) else {
            bail!("{}: no subcommand `{name}`", kind.file);
        };
        for (key, property) in root.schema.object().properties.iter_mut() {
            let help = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
                .and_then(|a| a.get_help())
                .map(|h| without_default(&h.to_string()));
            let meta = metadata(property);
            if meta.description.is_none() {
                meta.description = help;
            }
        }
    }
    Ok(serde_json::to_string_pretty(&root)? + "\n")
}

/// "Number of samples [default: 20000]." -> "Number of samples."
fn without_default(help: &str) -> String {
    match help.find(" [default:") {
        Some(i) => {
            let rest = &help[i..];
            let end = rest.find(']').map_or(rest.len(), |j| j + 1);
            format!("{}{}", &help[..i], &rest[end..])
        }
        None => help.to_string(),
    }
}
