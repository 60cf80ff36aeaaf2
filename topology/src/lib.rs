//! What `plexus topology` and `plexus trace` print: a tenant's virtual
//! topology as a tree people can read (in the spirit of `ovn-nbctl show`)
//! or as JSON, and packet traces step by step.
#![warn(missing_docs)]

pub mod dot;
pub mod dump;
pub mod lb;
pub mod probe;
pub mod trace;

pub use dump::{Dump, Names};
pub use probe::{run_trace, run_trace_with, TraceError, TraceRun, TraceSpec};
pub use trace::{render_trace, trace_json};
