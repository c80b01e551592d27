//! Artifact bytes in S3-compatible object storage (`ferrolab collab serve
//! --artifacts s3://BUCKET/PREFIX`): the blobs the tracking store names by their
//! SHA-256 live under `PREFIX/sha256/ab/abcd…` in the bucket, and the data folder's
//! `artifacts/` keeps copies as a cache (content-addressed, so a copy is never
//! stale). A blob is in the bucket before the path that names it is recorded, so
//! every replica of a cluster can serve every artifact.
//!
//! Credentials, region and endpoint come from the usual `AWS_*` environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` for a store other than AWS, `AWS_ALLOW_HTTP=true` for one
//! without TLS).

use anyhow::Context;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use std::io::{Read, Write};
use std::path::Path;

/// Files up to this size are sent in one request; larger ones in parts.
const SINGLE_PUT_BYTES: u64 = 8 << 20;

pub struct RemoteBlobs {
    store: AmazonS3,
    prefix: String,
    url: String,
    /// The store's requests run here, on a thread of their own, whatever thread
    /// (async or blocking) the tracking store is called on. Always `Some` until
    /// dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RemoteBlobs {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async caller may not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl RemoteBlobs {
    /// The bucket and prefix of `url` (`s3://bucket/prefix`), with the `AWS_*`
    /// environment's settings; checks that the bucket answers.
    pub fn open(url: &str) -> anyhow::Result<RemoteBlobs> {
        let rest = url.strip_prefix("s3://").with_context(|| {
            format!("the artifact store {url:?} is not an s3://BUCKET/PREFIX URL")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!("the artifact store {url:?} names no bucket (s3://BUCKET/PREFIX)");
        }
        // A store that is away fails the request within seconds (the client may
        // send it again), rather than holding it for object_store's default 3 min.
        let retry = object_store::RetryConfig {
            backoff: Default::default(),
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(15),
        };
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .build()
            .with_context(|| format!("cannot set up the artifact store {url}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the artifact store's runtime")?;
        let remote = RemoteBlobs {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            url: url.to_string(),
            runtime: Some(runtime),
        };
        remote
            .run(async {
                let probe = remote.key("probe");
                match remote.store.head(&probe).await {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(error) => Err(anyhow::Error::from(error)),
                }
            })
            .with_context(|| {
                format!(
                    "cannot reach the artifact store {url} (are the bucket, AWS_ENDPOINT_URL and \
                     the AWS_* credentials right?)"
                )
            })?;
        Ok(remote)
    }

    /// The store's URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, hash: &str) -> ObjectPath {
        let name = format!("sha256/{}/{hash}", &hash[..hash.len().min(2)]);
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Runs `work` on the store's runtime, on a thread of its own.
    fn run<T: Send>(
        &self,
        work: impl std::future::Future<Output = anyhow::Result<T>> + Send,
    ) -> anyhow::Result<T> {
        let runtime = self
            .runtime
            .as_ref()
            .context("the artifact store was closed")?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Sends the file `file` as the blob `hash`, unless the bucket has it already.
    pub fn put_file(&self, hash: &str, file: &Path) -> anyhow::Result<()> {
        let key = self.key(hash);
        self.run(async {
            match self.store.head(&key).await {
                Ok(_) => return Ok(()),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
            let mut source = std::fs::File::open(file)?;
            let size = source.metadata()?.len();
            if size <= SINGLE_PUT_BYTES {
                let mut bytes = Vec::with_capacity(size as usize);
                source.read_to_end(&mut bytes)?;
                self.store.put(&key, PutPayload::from(bytes)).await?;
                return Ok(());
            }
            let mut upload = WriteMultipart::new(self.store.put_multipart(&key).await?);
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let read = source.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                upload.wait_for_capacity(4).await?;
                upload.write(&buffer[..read]);
            }
            upload.finish().await?;
            anyhow::Ok(())
        })
        .with_context(|| format!("cannot store the artifact {hash} in {}", self.url))
    }

    /// Copies the blob `hash` from the bucket to `destination` (whole or not at
    /// all: through a temporary file that is renamed into place).
    pub fn fetch(&self, hash: &str, destination: &Path) -> anyhow::Result<()> {
        let key = self.key(hash);
        let folder = destination
            .parent()
            .context("an artifact's cache path has no folder")?;
        std::fs::create_dir_all(folder)?;
        let mut temporary = tempfile::NamedTempFile::new_in(folder)?;
        self.run(async {
            let mut stream = self.store.get(&key).await?.into_stream();
            while let Some(chunk) = stream.next().await {
                temporary.write_all(&chunk?)?;
            }
            anyhow::Ok(())
        })
        .with_context(|| format!("cannot read the artifact {hash} from {}", self.url))?;
        temporary.as_file().sync_all()?;
        temporary
            .persist(destination)
            .map_err(|error| error.error)?;
        Ok(())
    }
}
