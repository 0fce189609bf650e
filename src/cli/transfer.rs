//! `put` and `get`: streaming a file to or from a node, with a progress bar
//! on a terminal, and a `get -o` that appears whole or not at all.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use dfs::cas::ContentId;
use dfs::client::{Client, ClientError, Fetched};
use dfs::env::Env;
use dfs::meta::VersionSelector;
use dfs::wire::GetTarget;
use indicatif::{ProgressBar, ProgressStyle};

use super::uncached_output::UncachedOutput;
use super::{Failure, connect, output};
use crate::Cli;

fn progress_bar(total: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    Some(bar)
}

pub async fn put(env: &Env, cli: &Cli, path: &Path, name: Option<&str>) -> Result<(), Failure> {
    let from_stdin = path == Path::new("-");
    let name = match (name, from_stdin) {
        (Some(name), _) => name.to_string(),
        (None, true) => return Err(anyhow::anyhow!("reading stdin (`-`) needs --name NAME").into()),
        (None, false) => path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow::anyhow!("cannot take a name from {}; pass --name", path.display())
            })?,
    };
    let open = || async {
        match tokio::fs::File::open(path).await {
            Ok(file) => Ok(file),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(Failure {
                code: 3,
                error: anyhow::anyhow!("no such file: {}", path.display()),
            }),
            Err(error) => Err(Failure::from(
                anyhow::Error::new(error).context(format!("cannot open {}", path.display())),
            )),
        }
    };
    // Opened before connecting: a wrong path costs no round trip.
    let file = if from_stdin {
        None
    } else {
        Some(open().await?)
    };
    let mut client = connect(env, cli).await?;
    // The client cuts the file into chunks and sends only those the
    // current version of the name lacks (all of them for a new name). A
    // current version that cannot be read (its manifest lost, say) is no
    // reason to refuse a new one: that is how a user replaces it.
    let base = match client.put_base(&name).await {
        Ok(base) => base,
        Err(error @ (ClientError::Connection(_) | ClientError::Unreachable { .. })) => {
            return Err(error.into());
        }
        Err(error) if error.is_refused_key() => return Err(error.into()),
        Err(error) => {
            tracing::debug!(%error, "no base for the put; sending the whole file");
            None
        }
    };
    let record = match file {
        None => {
            let bar = progress_bar(None);
            let mut stdin = tokio::io::stdin();
            client
                .put_chunked(&name, base.as_ref(), &mut stdin, &mut |sent| {
                    if let Some(bar) = &bar {
                        bar.set_position(sent)
                    }
                })
                .await
        }
        Some(mut file) => {
            let metadata = file.metadata().await.ok();
            let size = metadata.as_ref().map(|m| m.len());
            // Only a regular file can be read again (not a pipe).
            let rereadable = metadata.is_some_and(|m| m.is_file());
            let bar = progress_bar(size);
            let mut show = |sent| {
                if let Some(bar) = &bar {
                    bar.set_position(sent)
                }
            };
            match client
                .put_chunked(&name, base.as_ref(), &mut file, &mut show)
                .await
            {
                // The base went (deleted for good or pruned, or its chunks
                // short of W copies) while this put ran: send the whole file.
                Err(error) if base.is_some() && rereadable && error.base_gone() => {
                    tracing::debug!(%error, "the put's base is gone; sending the whole file");
                    let mut file = open().await?;
                    client.put_chunked(&name, None, &mut file, &mut show).await
                }
                result => result,
            }
        }
    }?;
    output::stored(&record, cli.json);
    Ok(())
}

pub struct GetRequest<'a> {
    pub target: &'a str,
    pub output: Option<&'a Path>,
    pub version: Option<&'a str>,
    pub quorum: bool,
}

pub async fn get(env: &Env, cli: &Cli, request: GetRequest<'_>) -> Result<(), Failure> {
    let GetRequest {
        target,
        output,
        version,
        quorum,
    } = request;
    let version = version
        .map(|v| v.parse::<VersionSelector>())
        .transpose()
        .map_err(Failure::usage)?;
    let target = match target.parse::<ContentId>() {
        Ok(content) if version.is_none() => GetTarget::Content(content),
        _ => GetTarget::Name(target.to_string()),
    };
    let mut client = connect(env, cli).await?;
    let bar = progress_bar(Some(0));
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let fetched = match output.filter(|path| *path != Path::new("-")) {
        None => {
            client
                .get_with(
                    target,
                    version,
                    quorum,
                    &mut tokio::io::stdout(),
                    &mut progress,
                )
                .await?
        }
        Some(path) => {
            get_to_file(
                env,
                &mut client,
                (target, version, quorum),
                path,
                &mut progress,
            )
            .await?
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    output::fetched(&fetched, output, cli.json);
    Ok(())
}

/// Write to a temp file beside `path` (around the page cache:
/// [`UncachedOutput`]), sync, rename, sync the directory: the output
/// appears whole and verified, or not at all, and once this returns `Ok`
/// it survives a crash.
async fn get_to_file(
    env: &Env,
    client: &mut Client,
    (target, version, quorum): (GetTarget, Option<VersionSelector>, bool),
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Fetched, Failure> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    // A random name: one a killed get left behind never stands in the way
    // (a process id repeats, and is 1 in every container).
    let tmp = dir.join(format!(
        ".{file_name}.dfs-partial-{:016x}",
        env.random_u64()
    ));
    let mut output = UncachedOutput::create(env, &tmp)
        .await
        .with_context(|| format!("cannot write to {}", dir.display()))?;
    let result = async {
        let fetched = client
            .get_with(target, version, quorum, &mut output, progress)
            .await?;
        output.finish().await?;
        tokio::fs::rename(&tmp, path)
            .await
            .with_context(|| format!("cannot create {}", path.display()))?;
        // The new name survives a crash too, once the get says it is done.
        let sync_dir = async { tokio::fs::File::open(&dir).await?.sync_all().await };
        sync_dir
            .await
            .with_context(|| format!("cannot sync {}", dir.display()))?;
        Ok::<_, Failure>(fetched)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}
