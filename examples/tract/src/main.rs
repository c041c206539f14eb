//! `fewstep-tract`: the full `fewstep` CLI with this crate's plugins (`tract`, `midpoint`) linked
//! in. `use ... as _` is what links them: `typetag` and `inventory` register a plugin only if its
//! crate is part of the binary.

use fewstep_tract as _;

fn main() -> std::process::ExitCode {
    fewstep::cli::main()
}
