//! The deployment files' defaults work as shipped: checked on the files themselves.

fn read(path: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value of `NAME=` in the image's `ENV` lines.
fn image_env(dockerfile: &str, name: &str) -> Option<String> {
    dockerfile
        .lines()
        .map(|l| l.trim().trim_start_matches("ENV ").trim_end_matches('\\').trim())
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
}

#[test]
fn mail_files_go_to_a_writable_volume_in_kubernetes() {
    let dockerfile = read("deploy/Dockerfile");
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let mail_dir = image_env(&dockerfile, "AUTHD_MAIL_DIR").expect("the image sets AUTHD_MAIL_DIR");
    assert!(mail_dir.starts_with('/'), "an absolute directory: {mail_dir}");
    assert!(deployment.contains("readOnlyRootFilesystem: true"));
    // A volume is mounted on the mail directory, and it is an emptyDir.
    let lines: Vec<&str> = deployment.lines().map(str::trim).collect();
    let mount = lines
        .iter()
        .position(|l| *l == format!("mountPath: {mail_dir}"))
        .expect("a volume mounted on AUTHD_MAIL_DIR");
    let name = lines[mount - 1].trim_start_matches("- name: ").to_string();
    let volume = lines
        .iter()
        .rposition(|l| *l == format!("- name: {name}"))
        .expect("the mounted volume is declared");
    assert!(volume > mount);
    assert_eq!(lines[volume + 1], "emptyDir:", "the mail volume is an emptyDir");
    assert!(!lines[mount + 1].starts_with("readOnly: true"));
}

#[test]
fn trusted_proxies_are_explained_where_the_ingress_is() {
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let service = read("deploy/kubernetes/service.yaml");
    let at = configmap
        .find("AUTHD_TRUSTED_PROXIES:")
        .expect("the configmap sets AUTHD_TRUSTED_PROXIES");
    let comment = &configmap[configmap[..at].rfind("\n  AUTHD_").unwrap_or(0)..at];
    assert!(
        comment.contains("ingress") && comment.contains("rate limit"),
        "{comment}"
    );
    assert!(service.contains("AUTHD_TRUSTED_PROXIES"));
}

/// The image's build stage copies every part of the workspace the release build reads: each
/// member's directory, the protos, the migrations, the sources and the benchmark the manifest
/// names. (There is no Docker engine in CI to build the image itself.)
#[test]
fn the_image_copies_what_the_workspace_build_needs() {
    let dockerfile = read("deploy/Dockerfile");
    let manifest = read("Cargo.toml");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("a workspace member list");
    let mut needed: Vec<String> = members
        .trim_matches(['[', ']'])
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| *m != ".")
        .map(|m| m.split('/').next().unwrap().to_string())
        .collect();
    needed.extend(
        [
            "Cargo.toml",
            "Cargo.lock",
            "proto",
            "third_party",
            "migrations",
            "src",
            "benches",
        ]
        .map(String::from),
    );
    for path in needed {
        assert!(
            copied.contains(&path.as_str()),
            "deploy/Dockerfile does not COPY {path}"
        );
    }
    for path in &copied {
        let root = env!("CARGO_MANIFEST_DIR");
        assert!(
            std::path::Path::new(&format!("{root}/{path}")).exists(),
            "deploy/Dockerfile copies {path}, which does not exist"
        );
    }
}
