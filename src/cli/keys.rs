//! What the `key` verbs print.

use dfs::wire::KeyInfo;
use serde_json::json;

fn key_json(key: &KeyInfo) -> serde_json::Value {
    json!({
        "id": key.id.to_string(),
        "name": key.name,
        "access": key.permission.access.to_string(),
        "prefixes": key.permission.prefixes,
        "created_ms": key.created_ms,
        "last_used_ms": key.last_used_ms,
    })
}

/// `key create`: the secret is shown this once.
pub fn created(key: &KeyInfo, secret: &str, json: bool) {
    if json {
        let mut value = key_json(key);
        value["secret"] = json!(secret);
        println!("{value}");
        return;
    }
    println!(
        "created access key {} ({}: {})",
        key.id, key.name, key.permission
    );
    println!("access_key_id = {}", key.id);
    println!("secret_access_key = {secret}");
    eprintln!(
        "dfs-node: the secret is not shown again; keep it where its user finds it \
         (DFS_ACCESS_KEY_ID / DFS_SECRET_ACCESS_KEY, or a credentials file, 0600)"
    );
}

pub fn listing(keys: &[KeyInfo], json: bool) {
    if json {
        println!("{}", json!(keys.iter().map(key_json).collect::<Vec<_>>()));
        return;
    }
    for key in keys {
        let used = key.last_used_ms.map_or_else(
            || "not used here".to_string(),
            |ms| format!("last used {ms}"),
        );
        println!(
            "{}  {:<20}  {:<30}  created {}  {used}",
            key.id,
            key.name,
            key.permission.to_string(),
            key.created_ms
        );
    }
}

pub fn changed(what: &str, key: &KeyInfo, json: bool) {
    if json {
        println!("{}", key_json(key));
    } else {
        println!(
            "{what} access key {} ({}: {})",
            key.id, key.name, key.permission
        );
    }
}
