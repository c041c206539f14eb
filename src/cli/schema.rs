//! `fewstep schema`: a JSON Schema per config file kind, for editors and CI.

use crate::schema::{metadata, ConfigKind};
use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use std::path::PathBuf;

/// Every kind of config file that gets a schema. Adding one is one line here:
/// `ConfigKind::of::<Config>("<kind>.schema.json", include_str!("<defaults>.toml"))`, with
/// `.command("<subcommand>")` when that subcommand's flags set the same keys; then
/// `fewstep schema --out schemas/` and commit the new file.
pub fn config_kinds() -> Vec<ConfigKind> {
    vec![
        ConfigKind::of::<super::sample::SampleConfig>(
            "sample.schema.json",
            include_str!("../../configs/sample.toml"),
        )
        .command("sample"),
        ConfigKind::of::<crate::reproduce::samplers::SamplersConfig>(
            "reproduce-samplers.schema.json",
            include_str!("../../configs/reproduce/samplers-quick.toml"),
        ),
    ]
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for the schemas, one `<kind>.schema.json` per config file kind.
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
    /// Write nothing; fail if a schema in --out differs from what the linked-in plugins give.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut stale = vec![];
    for kind in config_kinds() {
        let text = render(&kind)?;
        let path = a.out.join(kind.file);
        if a.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::create_dir_all(&a.out)
                .with_context(|| format!("cannot create {}", a.out.display()))?;
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "out of date with the registered plugins: {}; regenerate with `cargo run -- schema \
             --out {}`",
            stale.join(", "),
            a.out.display()
        );
    }
    Ok(())
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
