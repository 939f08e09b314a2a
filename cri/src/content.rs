//! containerd's content store: checking, streaming in, reading back and
//! labelling blobs. Writes go through `Content.Write`'s bidirectional stream
//! in chunks of at most 1 MiB and are verified against the expected digest on
//! commit.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use containerd_client::services::v1::{
    AbortRequest, Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use futures::{Stream, StreamExt};
use prost_types::FieldMask;

use crate::client::Cri;
use crate::error::{CriError, Result};

/// Largest data message sent to `Content.Write`.
const CHUNK: usize = 1024 * 1024;

/// What a finished write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub digest: String,
    pub size: i64,
}

impl Cri {
    /// The blob's info, or `None` when the store does not have it.
    pub(crate) async fn blob_info(&self, digest: &str) -> Result<Option<Info>> {
        match self
            .content()
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.unavailable_or("Content.Info", digest, s)),
        }
    }

    /// Streams `data` into the store under `lease`, hashing on the way. With
    /// `expected` set, a different hash fails the write; without, the blob is
    /// stored under the hash of what was sent.
    pub(crate) async fn write_blob<S, E>(
        &self,
        lease: &str,
        ingest_ref: &str,
        expected: Option<&str>,
        total: Option<i64>,
        labels: HashMap<String, String>,
        data: S,
    ) -> Result<Written>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        // A previous attempt (say, orca killed mid-pull) may hold the ref.
        let _ = self
            .content()
            .abort(self.req(AbortRequest {
                r#ref: ingest_ref.to_string(),
            }))
            .await;

        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let ingest = ingest_ref.to_string();
        let expected_s = expected.unwrap_or_default().to_string();
        let total_v = total.unwrap_or(0);
        let feeder = tokio::spawn(async move {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            let mut offset: i64 = 0;
            let mut buffer = BytesMut::with_capacity(CHUNK);
            let mut data = std::pin::pin!(data);
            let send_chunk = |chunk: Bytes, offset: i64| WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: ingest.clone(),
                total: total_v,
                expected: expected_s.clone(),
                offset,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            };
            while let Some(item) = data.next().await {
                let bytes = item.map_err(|e| e.to_string())?;
                hasher.update(&bytes);
                buffer.extend_from_slice(&bytes);
                while buffer.len() >= CHUNK {
                    let chunk = buffer.split_to(CHUNK).freeze();
                    let n = chunk.len() as i64;
                    if tx.send(send_chunk(chunk, offset)).await.is_err() {
                        return Err("content store closed the write".to_string());
                    }
                    offset += n;
                }
            }
            if !buffer.is_empty() || offset == 0 {
                let chunk = buffer.split().freeze();
                let n = chunk.len() as i64;
                if tx.send(send_chunk(chunk, offset)).await.is_err() {
                    return Err("content store closed the write".to_string());
                }
                offset += n;
            }
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            if !expected_s.is_empty() && expected_s != digest {
                return Err(format!(
                    "digest mismatch: expected {expected_s}, got {digest}"
                ));
            }
            let commit = WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: ingest.clone(),
                total: offset,
                expected: digest.clone(),
                offset,
                data: Vec::new(),
                labels,
            };
            tx.send(commit)
                .await
                .map_err(|_| "content store closed the write".to_string())?;
            Ok::<(i64, String), String>((offset, digest))
        });

        let what = expected.unwrap_or(ingest_ref).to_string();
        let request = self.req_leased(tokio_stream::wrappers::ReceiverStream::new(rx), lease);
        let mut responses = match self.content().write(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                feeder.abort();
                return Err(self.unavailable_or("Content.Write", &what, s));
            }
        };
        let mut committed = None;
        loop {
            match responses.message().await {
                Ok(Some(r)) if r.action == WriteAction::Commit as i32 => {
                    committed = Some(r.digest);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(s) => {
                    // The feeder's own result explains a broken source better.
                    let fed = feeder.await;
                    if let Ok(Err(reason)) = fed {
                        return Err(CriError::content(&what, reason));
                    }
                    if s.code() == tonic::Code::AlreadyExists {
                        if let Ok(Ok((size, digest))) = fed {
                            return Ok(Written { digest, size });
                        }
                    }
                    return Err(self.unavailable_or("Content.Write", &what, s));
                }
            }
        }
        let (sent, digest) = match feeder.await {
            Ok(Ok(fed)) => fed,
            Ok(Err(reason)) => return Err(CriError::content(&what, reason)),
            Err(e) => return Err(CriError::content(&what, e)),
        };
        if committed.is_none() {
            return Err(CriError::content(
                &what,
                "content store closed the write without a commit",
            ));
        }
        if let Some(t) = total {
            if t != sent {
                return Err(CriError::content(
                    &what,
                    format!("size {sent} differs from the expected {t}"),
                ));
            }
        }
        Ok(Written { digest, size: sent })
    }

    /// Writes a small in-memory blob unless it is already there; keeps its labels.
    pub(crate) async fn put_blob(
        &self,
        lease: &str,
        digest: &str,
        bytes: Bytes,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        if self.blob_info(digest).await?.is_some() {
            if !labels.is_empty() {
                self.set_blob_labels(digest, labels).await?;
            }
            return Ok(());
        }
        let size = bytes.len() as i64;
        let data = futures::stream::iter([Ok::<Bytes, std::convert::Infallible>(bytes)]);
        self.write_blob(
            lease,
            &format!("orca-put-{digest}"),
            Some(digest),
            Some(size),
            labels,
            data,
        )
        .await
        .map(|_| ())
    }

    /// Reads a whole blob (manifests, configs: small things) into memory.
    pub(crate) async fn read_blob(&self, digest: &str, limit: usize) -> Result<Bytes> {
        let mut stream = self
            .content()
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| self.unavailable_or("Content.Read", digest, s))?
            .into_inner();
        let mut out = BytesMut::new();
        while let Some(part) = stream
            .message()
            .await
            .map_err(|s| self.unavailable_or("Content.Read", digest, s))?
        {
            out.extend_from_slice(&part.data);
            if out.len() > limit {
                return Err(CriError::content(
                    digest,
                    format!("larger than {limit} bytes"),
                ));
            }
        }
        Ok(out.freeze())
    }

    /// Adds or replaces labels on a blob, leaving its other labels alone.
    pub(crate) async fn set_blob_labels(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.content()
            .update(self.req(UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    size: 0,
                    created_at: None,
                    updated_at: None,
                    labels,
                }),
                update_mask: Some(FieldMask { paths }),
            }))
            .await
            .map_err(|s| self.unavailable_or("Content.Update", digest, s))?;
        Ok(())
    }
}
