//! stat / readdir / unlink over the delivered tree. Paths are converted to C
//! strings before the clock starts, so the timed loop is just the syscalls.

use std::ffi::CString;
use std::io;
use std::time::{Duration, Instant};

use super::deliver::Tree;
use crate::sys::{cstr, Result};

/// lstat(2) every delivered file; checks each size against the plan.
pub fn stat_all(t: &Tree) -> Result<Duration> {
    let paths: Vec<(CString, u64)> = t.files.iter().map(|(p, s)| (cstr(p), *s)).collect();
    let mut bad = 0usize;
    let mut first_err = None;
    let t0 = Instant::now();
    for (p, size) in &paths {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::lstat(p.as_ptr(), &mut st) } != 0 {
            if first_err.is_none() {
                first_err = Some(format!("lstat {:?}: {}", p, io::Error::last_os_error()));
            }
        } else if st.st_size as u64 != *size {
            bad += 1;
        }
    }
    let el = t0.elapsed();
    if let Some(e) = first_err {
        return Err(e.into());
    }
    if bad > 0 {
        return Err(format!("stat: {bad} files have the wrong size").into());
    }
    Ok(el)
}

/// opendir + readdir to the end + closedir on every mailbox directory.
/// Returns the time and the number of entries (without `.` and `..`), and
/// checks that every delivered file was listed exactly once.
pub fn readdir_all(t: &Tree) -> Result<(Duration, u64)> {
    let dirs: Vec<CString> = t.dirs.iter().map(|d| cstr(d)).collect();
    let mut entries = 0u64;
    let t0 = Instant::now();
    for d in &dirs {
        let dp = unsafe { libc::opendir(d.as_ptr()) };
        if dp.is_null() {
            return Err(format!("opendir {:?}: {}", d, io::Error::last_os_error()).into());
        }
        loop {
            let e = unsafe { libc::readdir(dp) };
            if e.is_null() {
                break;
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                entries += 1;
            }
        }
        unsafe { libc::closedir(dp) };
    }
    let el = t0.elapsed();
    if entries != t.files.len() as u64 {
        return Err(format!("readdir listed {entries} entries, {} files were delivered", t.files.len()).into());
    }
    Ok((el, entries))
}

/// unlink(2) every delivered file.
pub fn unlink_all(t: &Tree) -> Result<Duration> {
    let paths: Vec<CString> = t.files.iter().map(|(p, _)| cstr(p)).collect();
    let t0 = Instant::now();
    for p in &paths {
        if unsafe { libc::unlink(p.as_ptr()) } != 0 {
            return Err(format!("unlink {:?}: {}", p, io::Error::last_os_error()).into());
        }
    }
    Ok(t0.elapsed())
}
