fn main() -> std::process::ExitCode {
    fewstep::cli::main()
}
