//! `Type=notify`: the daemon sends READY=1 to `$NOTIFY_SOCKET` once the
//! mount is up, and only then.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, is_mounted};

#[test]
fn ready_is_sent_once_the_mount_is_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let socket_path = tmp.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["mount", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg(&mnt)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let received = socket.recv(&mut buf);
    let mounted_then = is_mounted(&mnt);
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    let status = child.wait().unwrap();
    let n = received.expect("READY=1 within 60 s");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.starts_with("READY=1\n"), "{message:?}");
    assert!(message.contains(&format!("STATUS=mounted {}", mnt.display())));
    assert!(mounted_then, "READY=1 came before the mount was up");
    assert!(status.success());
}
