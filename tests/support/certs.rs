//! Test certificates, made with the `openssl` command (scripts/test installs it): a CA and
//! a server certificate for 127.0.0.1. Shared by the integration tests (`support::certs`)
//! and the Redis store's unit tests (included by path: they cannot link `tests/support`).

use std::path::Path;
use std::process::{Command, Stdio};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed to make the TLS test's certificates");
    assert!(status.success(), "openssl {args:?}");
}

/// A test CA (`ca.crt`, `ca.key`) and a certificate for 127.0.0.1 signed by it (`srv.crt`,
/// `srv.key`), in `dir`.
pub fn make_certificates(dir: &Path) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let run = |line: &str| openssl(dir, &line.split(' ').collect::<Vec<_>>());
    run(&format!(
        "req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=keygate-test-CA"
    ));
    run(&format!(
        "req {ec} -keyout srv.key -out srv.csr -subj /CN=127.0.0.1"
    ));
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").expect("write ext");
    run("x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext");
}
