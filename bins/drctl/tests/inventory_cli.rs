//! `drctl inventory --config FILE` against the simulated datacenter and
//! govmomi's vCenter simulator.

#[path = "../../../crates/dr-vsphere/tests/common/mod.rs"]
mod vcsim;

use std::process::Command;

fn drctl(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("drctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("drctl-inv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn the_simulated_backend() {
    let cfg = format!("{}/../../examples/sim.toml", env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = drctl(&["inventory", "--config", &cfg, "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let inv: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(inv["hosts"].as_array().map(Vec::len), Some(3));
    // new-1 is created only while the daemon runs.
    assert_eq!(inv["vms"].as_array().map(Vec::len), Some(6));
}

#[test]
fn a_vcenter_with_a_password_from_the_environment() {
    if !vcsim::available("a_vcenter_with_a_password_from_the_environment") {
        return;
    }
    let sim = vcsim::Vcsim::start(&["-tls"]);
    let thumb = sim.sha256.clone().expect("thumbprint");
    let cfg = temp_config(
        "vc.toml",
        &format!("backend = \"vsphere\"\n[vsphere]\nurl = \"{}\"\nuser = \"vmdr\"\npassword_env = \"DRCTL_TEST_VC_PW\"\nthumbprint = \"{thumb}\"\n[control]\nprobe_interval = \"1s\"\n", sim.url),
    );
    let path = cfg.to_str().expect("utf-8");
    let (code, out, err) = drctl(
        &["inventory", "--config", path],
        &[("DRCTL_TEST_VC_PW", "s3cret")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("DC0_C0_H0") && out.contains("Connected"),
        "{out}"
    );
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "the password leaked"
    );
    let (code, _, err) = drctl(
        &["inventory", "--config", path],
        &[("DRCTL_TEST_VC_PW", "wrong")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("InvalidLogin"), "{err}");
    assert!(!err.contains("wrong"), "the password leaked: {err}");
}

#[test]
fn a_vcenter_with_a_weak_key_is_refused_saying_why() {
    if !vcsim::available("a_vcenter_with_a_weak_key_is_refused_saying_why") {
        return;
    }
    // The case: the right thumbprint pinned, the key 1024-bit.
    let sim = vcsim::Vcsim::start(&["-tls", "-cert-kind", "weak"]);
    let thumb = sim.sha256.clone().expect("thumbprint");
    let cfg = temp_config(
        "weak.toml",
        &format!("backend = \"vsphere\"\n[vsphere]\nurl = \"{}\"\nuser = \"vmdr\"\npassword_env = \"DRCTL_TEST_VC_PW\"\nthumbprint = \"{thumb}\"\n", sim.url),
    );
    let (code, _, err) = drctl(
        &["inventory", "--config", cfg.to_str().expect("utf-8")],
        &[("DRCTL_TEST_VC_PW", "s3cret")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("too weak") && err.contains("replace the vCenter's certificate"),
        "{err}"
    );
    assert!(!err.contains("BadSignature"), "{err}");
}

#[test]
fn bad_configurations_exit_2_naming_the_problem() {
    for (text, needle) in [
        ("backend = \"xen\"\n", "expected \"sim\", \"vsphere\" or \"libvirt\""),
        ("backend = \"libvirt\"\n", "needs a [libvirt] section"),
        (
            "backend = \"libvirt\"\n[libvirt]\n[[libvirt.host]]\nname = \"a1\"\nuri = \"qemu+tls://a1/system\"\n",
            "qemu+tls is not spoken",
        ),
        ("backend = \"vsphere\"\n", "needs a [vsphere] section"),
        ("backend = \"vsphere\"\n[vsphere]\nurl = \"https://127.0.0.1:1/sdk\"\nuser = \"u\"\npassword = \"p\"\n", "unknown field `password`"),
        ("backend = \"vsphere\"\n[vsphere]\nurl = \"https://127.0.0.1:1/sdk\"\nuser = \"u\"\n", "password_file or password_env is required"),
        ("backend = [\n", "bad.toml:2: invalid array"),
    ] {
        let cfg = temp_config("bad.toml", text);
        let (code, _, err) = drctl(&["inventory", "--config", cfg.to_str().expect("utf-8")], &[]);
        assert_eq!(code, 2, "{text}");
        assert!(err.contains(needle), "{text}: {err}");
    }
}
