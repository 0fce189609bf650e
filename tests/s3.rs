//! The S3 API through the clients people use, unchanged: boto3 (the suite
//! in `s3_clients/boto3_suite.py`), aws-cli, rclone and s3cmd, each against
//! a 3-node cluster of real processes. `.ci/run` installs the clients; a
//! missing one fails its test (it must not pass by not running).
#![allow(clippy::disallowed_methods)] // Real processes: waits on the real clock.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Node, start_cluster, wait_until};

/// A started 3-node cluster, every node seeing every other (and knowing
/// the admin key, which `status` through each proves).
fn cluster(root: &Path) -> Vec<Node> {
    let nodes = start_cluster(root, 3);
    wait_until(Duration::from_secs(30), "3 alive on every node", || {
        nodes.iter().all(|n| n.alive_count() == 3)
    });
    nodes
}

/// The admin key of a cluster started by [`start_cluster`].
fn admin_key(root: &Path) -> (String, String) {
    let text = std::fs::read_to_string(root.join("n0").join("credentials")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| rest.trim_start_matches([' ', '=']).trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in the credentials file"))
    };
    (field("access_key_id"), field("secret_access_key"))
}

fn endpoint(node: &Node) -> String {
    node.s3.clone().expect("the node serves S3")
}

/// Run `command`, failing the test with its output unless it succeeds.
fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}); .ci/run installs it"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `aws` with the cluster's admin key, against `node`.
fn aws(node: &Node, key: &(String, String)) -> Command {
    let mut command = Command::new("aws");
    command
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .args(["--endpoint-url", &endpoint(node)]);
    command
}

/// Files with awkward names and sizes (one above the multipart threshold
/// of aws-cli and rclone) in `dir`; returns their relative names.
fn awkward_tree(dir: &Path) -> Vec<String> {
    let names = [
        "plain.txt",
        "with space.txt",
        "zoë ünïcode.txt",
        "plus+sign.txt",
        "per%cent.txt",
        "amp&ersand.txt",
        "nested/deeper/file.bin",
    ];
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let size = if i == names.len() - 1 {
            20 << 20
        } else {
            1000 + i * 777
        };
        let bytes: Vec<u8> = (0..size).map(|b| (b * 31 + i * 7) as u8).collect();
        std::fs::write(path, bytes).unwrap();
    }
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn boto3_runs_every_operation_and_cli_files_are_objects() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path());
    let key = admin_key(dir.path());
    // A file put with the native CLI is an object of bucket `clifiles`.
    let mut put = nodes[1].client_command();
    put.args(["put", "-", "--name", "clifiles/hello.txt"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = put.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from the cli\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    // A read-write key limited to the bucket `team`.
    let created = nodes[0].cli(&["key", "create", "team", "--prefix", "team/", "--json"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let team: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_clients/boto3_suite.py");
    let output = run(
        Command::new("python3")
            .arg(&suite)
            .env("DFS_S3", endpoint(&nodes[0]))
            .env("DFS_S3_OTHER", endpoint(&nodes[2]))
            .env("DFS_KEY_ID", &key.0)
            .env("DFS_SECRET", &key.1)
            .env("DFS_TEAM_KEY_ID", team["id"].as_str().unwrap())
            .env("DFS_TEAM_SECRET", team["secret"].as_str().unwrap())
            .env("TMPDIR", dir.path()),
        "the boto3 suite (python3 with boto3)",
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("checks passed"), "{said}");
    // The node counted the suite's requests by S3 operation.
    let (_, metrics) = common::http_get(nodes[0].admin.as_ref().unwrap(), "/metrics");
    for operation in [
        "PutObject",
        "GetObject",
        "ListObjectVersions",
        "CompleteMultipartUpload",
    ] {
        let series =
            format!(r#"dfs_requests_total{{protocol="s3",kind="{operation}",outcome="ok"}}"#);
        assert!(
            common::metric_value(&metrics, &series) >= 1.0,
            "{series} in {metrics}"
        );
    }
    // And an object put through S3 is a file to the CLI.
    let got = nodes[1].cli(&["get", "clifiles/from-s3.txt"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, b"hello from s3\n");
}

#[test]
fn aws_cli_copies_syncs_lists_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path());
    let key = admin_key(dir.path());
    let source = dir.path().join("source");
    let names = awkward_tree(&source);
    run(
        aws(&nodes[0], &key).args(["s3", "mb", "s3://awscli"]),
        "aws s3 mb",
    );
    run(
        aws(&nodes[0], &key)
            .args(["s3", "sync", "--only-show-errors"])
            .arg(&source)
            .arg("s3://awscli/tree"),
        "aws s3 sync up",
    );
    // Read back through another node.
    let back = dir.path().join("back");
    run(
        aws(&nodes[1], &key)
            .args(["s3", "sync", "--only-show-errors", "s3://awscli/tree"])
            .arg(&back),
        "aws s3 sync down",
    );
    for name in &names {
        assert_eq!(
            std::fs::read(source.join(name)).unwrap(),
            std::fs::read(back.join(name)).unwrap(),
            "{name}"
        );
    }
    let listing = run(
        aws(&nodes[2], &key).args(["s3", "ls", "--recursive", "s3://awscli/tree/"]),
        "aws s3 ls",
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in &names {
        assert!(listing.contains(name.as_str()), "{name} not in {listing}");
    }
    // A second sync sends nothing: sizes and times match.
    let again = run(
        aws(&nodes[0], &key)
            .args(["s3", "sync"])
            .arg(&source)
            .arg("s3://awscli/tree"),
        "aws s3 sync again",
    );
    assert!(
        again.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    // The s3api calls multipart tools make, by hand.
    let create = run(
        aws(&nodes[0], &key).args([
            "s3api",
            "create-multipart-upload",
            "--bucket",
            "awscli",
            "--key",
            "by-hand",
            "--query",
            "UploadId",
            "--output",
            "text",
        ]),
        "aws s3api create-multipart-upload",
    );
    let upload_id = String::from_utf8_lossy(&create.stdout).trim().to_string();
    let part = source.join("nested/deeper/file.bin");
    let uploaded = run(
        aws(&nodes[1], &key)
            .args([
                "s3api",
                "upload-part",
                "--bucket",
                "awscli",
                "--key",
                "by-hand",
                "--part-number",
                "1",
                "--upload-id",
                &upload_id,
                "--query",
                "ETag",
                "--output",
                "text",
                "--body",
            ])
            .arg(&part),
        "aws s3api upload-part",
    );
    let etag = String::from_utf8_lossy(&uploaded.stdout).trim().to_string();
    let parts = format!("{{\"Parts\":[{{\"PartNumber\":1,\"ETag\":{etag:?}}}]}}");
    run(
        aws(&nodes[2], &key).args([
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            "awscli",
            "--key",
            "by-hand",
            "--upload-id",
            &upload_id,
            "--multipart-upload",
            &parts,
        ]),
        "aws s3api complete-multipart-upload",
    );
    let fetched = dir.path().join("by-hand");
    run(
        aws(&nodes[0], &key)
            .args(["s3", "cp", "--only-show-errors", "s3://awscli/by-hand"])
            .arg(&fetched),
        "aws s3 cp down",
    );
    assert_eq!(
        std::fs::read(&part).unwrap(),
        std::fs::read(&fetched).unwrap()
    );
    // Versioning through s3api, in a bucket of its own.
    run(
        aws(&nodes[0], &key).args(["s3", "mb", "s3://awscli-versioned"]),
        "aws s3 mb",
    );
    run(
        aws(&nodes[0], &key).args([
            "s3api",
            "put-bucket-versioning",
            "--bucket",
            "awscli-versioned",
            "--versioning-configuration",
            "Status=Enabled",
        ]),
        "aws s3api put-bucket-versioning",
    );
    for _ in 0..2 {
        run(
            aws(&nodes[1], &key)
                .args(["s3", "cp", "--only-show-errors"])
                .arg(source.join("plain.txt"))
                .arg("s3://awscli-versioned/versioned.txt"),
            "aws s3 cp up",
        );
    }
    let list_versions = |node: &Node| {
        let listed = run(
            aws(node, &key).args([
                "s3api",
                "list-object-versions",
                "--bucket",
                "awscli-versioned",
                "--prefix",
                "versioned.txt",
                "--query",
                "Versions[].VersionId",
                "--output",
                "text",
            ]),
            "aws s3api list-object-versions",
        );
        String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .filter(|id| *id != "None")
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let ids = list_versions(&nodes[2]);
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        run(
            aws(&nodes[0], &key).args([
                "s3api",
                "delete-object",
                "--bucket",
                "awscli-versioned",
                "--key",
                "versioned.txt",
                "--version-id",
                id,
            ]),
            "aws s3api delete-object --version-id",
        );
    }
    assert_eq!(list_versions(&nodes[1]), Vec::<String>::new());
    // With no version left, the bucket is empty and goes.
    run(
        aws(&nodes[2], &key).args(["s3", "rb", "s3://awscli-versioned"]),
        "aws s3 rb (versioned)",
    );
    run(
        aws(&nodes[0], &key).args([
            "s3",
            "rm",
            "--recursive",
            "--only-show-errors",
            "s3://awscli/",
        ]),
        "aws s3 rm --recursive",
    );
    run(
        aws(&nodes[0], &key).args(["s3", "rb", "s3://awscli"]),
        "aws s3 rb",
    );
    let buckets = run(aws(&nodes[1], &key).args(["s3", "ls"]), "aws s3 ls");
    assert!(!String::from_utf8_lossy(&buckets.stdout).contains("awscli"));
}

#[test]
fn rclone_copies_syncs_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path());
    let key = admin_key(dir.path());
    let rclone = |node: &Node| {
        let mut command = Command::new("rclone");
        command
            .env("RCLONE_CONFIG", "/dev/null")
            // A CA bundle (set on some hosts) makes rclone refuse plain HTTP.
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG_DFS_TYPE", "s3")
            .env("RCLONE_CONFIG_DFS_PROVIDER", "Other")
            .env("RCLONE_CONFIG_DFS_ACCESS_KEY_ID", &key.0)
            .env("RCLONE_CONFIG_DFS_SECRET_ACCESS_KEY", &key.1)
            .env("RCLONE_CONFIG_DFS_ENDPOINT", endpoint(node))
            .env("RCLONE_CONFIG_DFS_FORCE_PATH_STYLE", "true")
            .args(["--retries", "1", "--low-level-retries", "1"]);
        command
    };
    let source = dir.path().join("source");
    awkward_tree(&source);
    run(
        rclone(&nodes[0]).args(["mkdir", "dfs:rclone"]),
        "rclone mkdir",
    );
    run(
        rclone(&nodes[0])
            .arg("copy")
            .arg(&source)
            .arg("dfs:rclone/tree"),
        "rclone copy",
    );
    // check compares sizes and MD5s (the ETags) through another node.
    run(
        rclone(&nodes[1])
            .arg("check")
            .arg(&source)
            .arg("dfs:rclone/tree"),
        "rclone check",
    );
    // A changed and a removed file: sync makes the bucket match again.
    std::fs::write(source.join("plain.txt"), b"changed").unwrap();
    std::fs::remove_file(source.join("plus+sign.txt")).unwrap();
    run(
        rclone(&nodes[2])
            .arg("sync")
            .arg(&source)
            .arg("dfs:rclone/tree"),
        "rclone sync",
    );
    run(
        rclone(&nodes[0])
            .args(["check", "--download"])
            .arg(&source)
            .arg("dfs:rclone/tree"),
        "rclone check --download",
    );
}

#[test]
fn s3cmd_puts_gets_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path());
    let key = admin_key(dir.path());
    let host = endpoint(&nodes[0])
        .trim_start_matches("http://")
        .to_string();
    let config = dir.path().join("s3cfg");
    std::fs::write(
        &config,
        format!(
            "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n",
            key.0, key.1
        ),
    )
    .unwrap();
    let s3cmd = || {
        let mut command = Command::new("s3cmd");
        command.arg("--config").arg(&config);
        command
    };
    let source = dir.path().join("source");
    let names = awkward_tree(&source);
    run(s3cmd().args(["mb", "s3://s3cmd"]), "s3cmd mb");
    for name in &names {
        run(
            s3cmd()
                .arg("put")
                .arg(source.join(name))
                .arg(format!("s3://s3cmd/{name}")),
            "s3cmd put",
        );
    }
    let listing = run(
        s3cmd().args(["ls", "--recursive", "s3://s3cmd"]),
        "s3cmd ls",
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in &names {
        assert!(listing.contains(name.as_str()), "{name} not in {listing}");
    }
    for name in &names {
        let back = dir.path().join("back").join(name);
        std::fs::create_dir_all(back.parent().unwrap()).unwrap();
        // s3cmd checks the MD5 of what it gets against the ETag.
        run(
            s3cmd()
                .arg("get")
                .arg(format!("s3://s3cmd/{name}"))
                .arg(&back),
            "s3cmd get",
        );
        assert_eq!(
            std::fs::read(source.join(name)).unwrap(),
            std::fs::read(&back).unwrap(),
            "{name}"
        );
    }
}

/// README, Integrity: an S3 client does not hash what it reads, so the
/// node does. A chunk whose seal checks but whose bytes are not the ones
/// its id names (sealed wrong by a node's bug or a memory error between
/// its hash and its seal, on every replica) makes the GET fail; its
/// bytes are never served.
#[test]
fn a_chunk_sealed_wrong_is_not_served_over_s3() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path());
    let key = admin_key(root.path());
    let original = root.path().join("object.bin");
    let bytes: Vec<u8> = (0..100_000u32).map(|b| (b * 13 % 251) as u8).collect();
    std::fs::write(&original, &bytes).unwrap();
    run(
        aws(&nodes[0], &key).args(["s3", "mb", "s3://wrong"]),
        "aws s3 mb",
    );
    run(
        aws(&nodes[0], &key).args(["s3", "cp", original.to_str().unwrap(), "s3://wrong/object"]),
        "aws s3 cp up",
    );
    // The object is one chunk (a file on each node; its manifest is in the
    // small-blob table). Seal other bytes under its id, on every node.
    let cluster_key = dfs::keys::ClusterKey::load(
        &dfs::env::tokio_env(),
        &root.path().join("n0").join("cluster.key"),
    )
    .unwrap();
    let sealer = dfs::store::Sealer::new(&cluster_key);
    let garbage = vec![0xA5u8; bytes.len()];
    let mut replaced = 0;
    for node in 0..3 {
        let chunks = root.path().join(format!("n{node}")).join("chunks");
        for prefix in std::fs::read_dir(&chunks).unwrap() {
            for file in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                let mut id = [0u8; 32];
                hex::decode_to_slice(&name, &mut id).unwrap();
                let id = dfs::cas::ChunkId(id);
                assert_eq!(
                    id,
                    dfs::cas::ChunkId::of(&bytes),
                    "only the object's chunk is a file"
                );
                std::fs::write(&path, sealer.seal(&id, &garbage)).unwrap();
                replaced += 1;
            }
        }
    }
    assert_eq!(replaced, 3, "one copy on each node");
    let fetched = root.path().join("fetched.bin");
    let output = aws(&nodes[1], &key)
        .args(["s3", "cp", "s3://wrong/object", fetched.to_str().unwrap()])
        .output()
        .expect("aws runs");
    assert!(
        !output.status.success(),
        "the GET of a chunk sealed wrong succeeded"
    );
    if let Ok(got) = std::fs::read(&fetched) {
        assert!(
            !got.windows(64).any(|w| w == &garbage[..64]),
            "bytes of a chunk sealed wrong reached the client"
        );
    }
}
