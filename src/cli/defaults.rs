//! `fewstep config train|distill|sample`: a command's built-in defaults, resolved the way the
//! command resolves them (every plugin's fields with their defaults), as a TOML file to start a
//! `--config` from.

use crate::config::{to_toml, ConfigBuilder};
use crate::run::sample::{self, SampleConfig};
use crate::run::{distill, train};
use crate::train::TrainConfig;
use anyhow::Result;
use serde::{de::DeserializeOwned, Serialize};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The command whose defaults to print.
    #[arg(value_parser = ["train", "distill", "sample"])]
    pub command: String,
}

/// Keys without a default (`data`; a student's `denoiser`, from its teacher) get a stand-in while
/// the config is resolved, removed from what is printed.
fn stand_in(key: &str) -> toml::Value {
    match key {
        "denoiser" => toml::toml! { name = "mlp" }.into(),
        _ => toml::Value::String("<no default>".into()),
    }
}

pub fn run(a: Args) -> Result<()> {
    let text = match a.command.as_str() {
        "train" => resolved::<TrainConfig>(train::DEFAULTS, &["data"])?,
        "distill" => resolved::<TrainConfig>(distill::DEFAULTS, &["data", "denoiser"])?,
        _ => resolved::<SampleConfig>(sample::DEFAULTS, &[])?,
    };
    let unset = match a.command.as_str() {
        "train" => "`data` has no default (--data FILE).",
        "distill" => "--teacher RUN brings the student's `denoiser`, `init` and `data`.",
        _ => "`data` (--data FILE) defines the `gmm` denoiser's mixture.",
    };
    println!(
        "# `fewstep {}` defaults, resolved (docs/config-reference.md describes every key).\n\
         # Flags override a --config file's keys; {unset}\n",
        a.command
    );
    print!("{text}");
    Ok(())
}

/// The defaults deserialised into the command's config and written back as TOML.
fn resolved<T: Serialize + DeserializeOwned>(defaults: &str, unset: &[&str]) -> Result<String> {
    let mut b = ConfigBuilder::from_defaults(defaults)?;
    for key in unset {
        b = b.set(key, Some(stand_in(key)));
    }
    let mut table: toml::Table = to_toml(&b.build::<T>()?)?.parse()?;
    for key in unset {
        table.remove(*key);
    }
    Ok(toml::to_string(&table)?)
}
