//! Process limits an agent needs raised.

/// Raises the soft limit on open files to the hard limit: every bound port
/// holds a socket or a TAP descriptor, and the usual soft limit (1,024) is
/// far below the ports of a large host. A failure only warns: the ports
/// beyond the limit then fail to open, each with its error.
pub(crate) fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into `limit`, which outlives
    // the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        tracing::info!(
            limit = limit.rlim_cur,
            "open-file limit already at its hard limit"
        );
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit(2) reads one rlimit from `raised`, which outlives
    // the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, soft = limit.rlim_cur, hard = limit.rlim_max, "cannot raise the open-file limit");
        return;
    }
    tracing::info!(
        from = limit.rlim_cur,
        to = limit.rlim_max,
        "raised the open-file limit to its hard limit"
    );
}
