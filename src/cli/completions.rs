//! `fewstep completions SHELL`: a shell completion script on stdout.

use clap::CommandFactory;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shell to write the script for.
    pub shell: clap_complete::Shell,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "fewstep", &mut std::io::stdout());
    Ok(())
}
