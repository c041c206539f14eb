//! `fewstep list [KIND]`.

use crate::registry::{self, kind};
use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this kind: schedule, integrator, denoiser or objective.
    pub kind: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(k) = &args.kind {
        if !kind::ALL.contains(&k.as_str()) {
            bail!(
                "unknown plugin kind `{k}`; valid kinds: {}",
                kind::ALL.join(", ")
            );
        }
    }
    print!("{}", render(args.kind.as_deref()));
    Ok(())
}

/// The listing as text: a heading per kind, a line per plugin, an indented line per field.
pub fn render(only: Option<&str>) -> String {
    let mut out = String::new();
    for k in kind::ALL.iter().filter(|k| only.is_none_or(|o| o == **k)) {
        out.push_str(&format!("{k}s  ([{k}] name = \"...\")\n"));
        for p in registry::plugins(Some(k)) {
            out.push_str(&format!("  {:<22} {}\n", p.name, p.summary));
            for (field, ty, desc) in registry::fields(p) {
                out.push_str(&format!("      {field} ({ty}): {desc}\n"));
            }
        }
        out.push('\n');
    }
    out
}
