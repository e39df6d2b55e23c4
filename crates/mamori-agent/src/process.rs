//! Stopping a process the detector convicted: SIGSTOP at once (it cannot touch another file
//! while we look at it), then a last look at who it is, then SIGKILL.
//!
//! The pid came from a file event read a moment ago, so it may have been reused since: when the
//! event named the executable, the process is stopped only if `/proc/PID/exe` still names it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for a killed process to disappear before reporting it as still there.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// What [`stop_and_kill`] found and did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stopped {
    pub pid: u32,
    pub exe: Option<PathBuf>,
    /// NUL-separated arguments joined by spaces (empty for a process without any).
    pub command_line: String,
    pub ppid: Option<u32>,
    /// Gone after SIGKILL within [`KILL_WAIT`] (a zombie counts as gone: it runs nothing).
    pub gone: bool,
}

/// SIGSTOPs `pid`, records what it is, then SIGKILLs it. Refuses pid 0 and 1, the agent itself,
/// and a pid that now runs another executable than `expected_exe`.
pub(crate) fn stop_and_kill(pid: u32, expected_exe: Option<&Path>) -> Result<Stopped, String> {
    if pid <= 1 {
        return Err(format!("refusing to stop pid {pid}"));
    }
    if pid == std::process::id() {
        return Err("refusing to stop the agent itself".into());
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let exe = fs::read_link(proc_dir.join("exe")).ok();
    if let (Some(expected), Some(now)) = (expected_exe, exe.as_deref()) {
        if !same_exe(expected, now) {
            return Err(format!(
                "pid {pid} now runs {} instead of {} (the pid was reused); nothing was stopped",
                now.display(),
                expected.display()
            ));
        }
    }
    signal(pid, libc::SIGSTOP)?;
    let command_line = fs::read(proc_dir.join("cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let ppid = fs::read_to_string(proc_dir.join("stat")).ok().and_then(|s| parse_ppid(&s));
    signal(pid, libc::SIGKILL)?;
    let deadline = Instant::now() + KILL_WAIT;
    let mut gone = false;
    while Instant::now() < deadline {
        if !runs(pid) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Stopped { pid, exe, command_line, ppid, gone })
}

/// `/proc/PID/exe` reads `PATH (deleted)` once the file is unlinked; that is still the same
/// program.
fn same_exe(expected: &Path, now: &Path) -> bool {
    let strip = |p: &Path| {
        let s = p.as_os_str().as_encoded_bytes();
        s.strip_suffix(b" (deleted)").unwrap_or(s).to_vec()
    };
    strip(expected) == strip(now)
}

/// The process exists and is not a zombie.
fn runs(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => state_of(&s).is_some_and(|st| st != 'Z' && st != 'X'),
        Err(_) => false,
    }
}

/// Fields after the command name, which is in parentheses and may itself contain spaces and ')'.
fn after_comm(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

fn state_of(stat: &str) -> Option<char> {
    after_comm(stat)?.first()?.chars().next()
}

fn parse_ppid(stat: &str) -> Option<u32> {
    after_comm(stat)?.get(1)?.parse().ok()
}

#[allow(unsafe_code)]
fn signal(pid: u32, sig: libc::c_int) -> Result<(), String> {
    let raw = libc::pid_t::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(raw, sig) };
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        let name = if sig == libc::SIGSTOP { "SIGSTOP" } else { "SIGKILL" };
        match e.raw_os_error() {
            Some(libc::ESRCH) => Err(format!("{name} to pid {pid}: the process has already exited")),
            _ => Err(format!("{name} to pid {pid}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "4242 (evil) (x) y) S 17 4242 4242 0 -1 4194560";
        assert_eq!(state_of(stat), Some('S'));
        assert_eq!(parse_ppid(stat), Some(17));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn stops_and_kills_a_real_process_and_refuses_the_wrong_ones() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        // Between fork and exec the child is still a copy of this test binary.
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default() != b"sleep\x0030\x00" {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let other = Path::new("/usr/bin/definitely-not-sleep");
        let refused = stop_and_kill(pid, Some(other)).unwrap_err();
        assert!(refused.contains("reused"), "{refused}");
        assert!(runs(pid), "a refused stop leaves the process alone");

        let s = stop_and_kill(pid, Some(&exe)).unwrap();
        assert_eq!(s.pid, pid);
        assert_eq!(s.exe.as_deref(), Some(exe.as_path()));
        assert_eq!(s.command_line, "sleep 30");
        assert_eq!(s.ppid, Some(std::process::id()));
        assert!(s.gone);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));

        assert!(stop_and_kill(1, None).unwrap_err().contains("refusing"));
        assert!(stop_and_kill(std::process::id(), None).unwrap_err().contains("agent itself"));
        assert!(stop_and_kill(pid, None).unwrap_err().contains("already exited"));
    }

    #[test]
    fn a_deleted_executable_is_still_the_same_program() {
        assert!(same_exe(Path::new("/tmp/x/enc"), Path::new("/tmp/x/enc (deleted)")));
        assert!(!same_exe(Path::new("/tmp/x/enc"), Path::new("/tmp/x/other")));
    }
}
