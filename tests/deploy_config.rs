//! The camgate.yaml files shipped in deploy/ load with `camgate
//! check-config`, given the environment the manifests provide
//! (CAMGATE_EXTERNAL_IP from the downward API or a literal,
//! CAMGATE_SECRETS_DIR with the mounted Secret).

mod common;

use std::process::Command;

fn check(file: &str, env: &[(&str, &str)]) -> std::process::Output {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s/").to_owned() + file;
    Command::new(env!("CARGO_BIN_EXE_camgate"))
        .args(["check-config", &path])
        .env_remove("CAMGATE_EXTERNAL_IP")
        .env_remove("CAMGATE_SECRETS_DIR")
        .env_remove("CAMGATE_API_KEY_SHA256")
        .env_remove("CAMGATE_POD_NAME")
        .envs(env.iter().copied())
        .output()
        .expect("run camgate check-config")
}

#[test]
fn shipped_configs_load_with_the_pod_environment() {
    let dir = common::tempdir::Dir::new();
    std::fs::write(dir.path().join("sip-password"), "from-secret\n").unwrap();
    let secrets = dir.path().to_str().unwrap();
    let pod_env = [
        ("CAMGATE_EXTERNAL_IP", "10.0.0.7"),
        ("CAMGATE_SECRETS_DIR", secrets),
        (
            "CAMGATE_API_KEY_SHA256",
            "e2186dbdb1bb4193608605e84f33208765b5693b55edd4f730a719a100eeea6f",
        ),
    ];

    let base = check("base/camgate.yaml", &pod_env);
    assert!(base.status.success(), "{base:?}");

    // Without the downward-API variable the load fails and says which.
    let missing = check("base/camgate.yaml", &pod_env[1..]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("CAMGATE_EXTERNAL_IP"), "{stderr}");

    let shared = check("overlays/shared-port/camgate.yaml", &pod_env);
    assert!(shared.status.success(), "{shared:?}");

    // The cluster overlay also reads the Redis password and the cluster
    // secret from the Secret, and names the node after the pod.
    std::fs::write(dir.path().join("redis-password"), "r\n").unwrap();
    std::fs::write(dir.path().join("cluster-secret"), "c\n").unwrap();
    let mut cluster_env = pod_env.to_vec();
    cluster_env.push(("CAMGATE_POD_NAME", "camgate-1"));
    let cluster = check("overlays/cluster/camgate.yaml", &cluster_env);
    assert!(cluster.status.success(), "{cluster:?}");
    let unnamed = check("overlays/cluster/camgate.yaml", &pod_env);
    assert!(!unnamed.status.success());
    assert!(
        String::from_utf8_lossy(&unnamed.stderr).contains("CAMGATE_POD_NAME"),
        "{unnamed:?}"
    );
}
