//! SigV4 needs each access key's secret: the node's keyring has it (sealed
//! under the cluster key in the index, opened on demand).

use std::sync::Arc;

use dfs::keys::AccessKeyId;
use dfs::node::Node;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

pub struct KeyringAuth(pub Arc<Node>);

#[async_trait::async_trait]
impl S3Auth for KeyringAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let unknown = || {
            s3_error!(
                InvalidAccessKeyId,
                "the access key id does not exist in this cluster (if it was just created, retry in a few seconds)"
            )
        };
        let id = AccessKeyId::parse(access_key).map_err(|_| unknown())?;
        let secret = self.0.secret(&id).ok_or_else(unknown)?;
        Ok(SecretKey::from(secret.expose()))
    }
}
