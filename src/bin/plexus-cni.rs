//! `plexus-cni`, the CNI plugin (see the `cni` crate).

fn main() -> std::process::ExitCode {
    cni::main()
}
