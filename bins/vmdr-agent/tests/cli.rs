//! vmdr-agent's command line: the example configuration is valid, and a
//! bad one is refused with exit 2 and the key named.

use std::path::Path;
use std::process::Command;

fn check(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmdr-agent"))
        .arg("--config")
        .arg(config)
        .arg("--check")
        .output()
        .expect("vmdr-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_example_is_valid_and_a_bad_file_names_its_key() {
    let dir = std::env::temp_dir().join(format!("vmdr-agent-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("agent-token"), "a-token-of-some-length").expect("token");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/vmdr-agent.toml");
    let text = std::fs::read_to_string(&example).expect("example");
    std::fs::write(dir.join("agent.toml"), &text).expect("copy");
    let (code, out) = check(&dir.join("agent.toml"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid"), "{out}");

    std::fs::write(
        dir.join("bad.toml"),
        text.replace("isolation_timeout = \"30s\"", "isolation_timeout = \"1s\""),
    )
    .expect("bad");
    let (code, out) = check(&dir.join("bad.toml"));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("isolation_timeout: must be at least three"),
        "{out}"
    );
    assert!(!out.contains("a-token-of-some-length"), "{out}");
}
