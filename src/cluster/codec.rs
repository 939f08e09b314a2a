//! gRPC messages as JSON: the cluster's messages are the serde types of
//! [`super::wire`], so both ends share one definition in Rust. A volume's
//! archive pieces, megabytes each, go as raw bytes instead ([`Frame`]):
//! a zero byte (no JSON text starts with one), the call's id, the data.

use std::marker::PhantomData;

use bytes::{Buf, BufMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// A message that may cross as a raw frame rather than as JSON.
pub trait Frame: Sized {
    /// The call id and the bytes of a message sent raw.
    fn raw(&self) -> Option<(u64, &[u8])> {
        None
    }

    /// The message a raw frame carries.
    fn from_raw(_id: u64, _data: bytes::Bytes) -> Option<Self> {
        None
    }
}

/// The first byte of a raw frame.
const RAW: u8 = 0;

/// Encodes `T`, decodes `U`.
#[derive(Debug)]
pub struct JsonCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for JsonCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct JsonEncoder<T>(PhantomData<T>);
pub struct JsonDecoder<U>(PhantomData<U>);

/// Writes `item` to `dst`: raw or JSON.
fn write<T: Serialize + Frame>(item: &T, dst: &mut impl BufMut) -> Result<(), Status> {
    if let Some((id, data)) = item.raw() {
        dst.put_u8(RAW);
        dst.put_u64(id);
        dst.put_slice(data);
        return Ok(());
    }
    serde_json::to_writer(dst.writer(), item).map_err(|e| Status::internal(format!("encode: {e}")))
}

/// Reads one message, the whole of `src`.
fn read<U: DeserializeOwned + Frame>(src: &mut impl Buf) -> Result<Option<U>, Status> {
    if !src.has_remaining() {
        return Ok(None);
    }
    if src.chunk().first() == Some(&RAW) {
        if src.remaining() < 9 {
            return Err(Status::invalid_argument("decode: a raw frame cut short"));
        }
        src.advance(1);
        let id = src.get_u64();
        // The decoder's own buffer, not a copy of it.
        let data = src.copy_to_bytes(src.remaining());
        return U::from_raw(id, data)
            .map(Some)
            .ok_or_else(|| Status::invalid_argument("decode: an unexpected raw frame"));
    }
    // One contiguous slice: serde_json reads a slice many times faster
    // than a reader.
    let bytes = src.copy_to_bytes(src.remaining());
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("decode: {e}")))
}

impl<T: Serialize + Frame> Encoder for JsonEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        write(&item, dst)
    }
}

impl<U: DeserializeOwned + Frame> Decoder for JsonDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        read(src)
    }
}

impl<T, U> Codec for JsonCodec<T, U>
where
    T: Serialize + Frame + Send + 'static,
    U: DeserializeOwned + Frame + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = JsonEncoder<T>;
    type Decoder = JsonDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        JsonEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        JsonDecoder(PhantomData)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::archive::Piece;
    use crate::cluster::wire::{Down, Up};

    fn round_trip<T: Serialize + DeserializeOwned + Frame>(item: T) -> T {
        let mut buf = bytes::BytesMut::new();
        write(&item, &mut buf).unwrap();
        read(&mut buf.freeze()).unwrap().unwrap()
    }

    #[test]
    fn pieces_cross_raw_and_everything_else_as_json() {
        let data: bytes::Bytes = (0..=255u8).cycle().take(70_000).collect();
        match round_trip(Up::Piece {
            id: 7,
            piece: Piece::Data(data.clone()),
        }) {
            Up::Piece {
                id: 7,
                piece: Piece::Data(d),
            } => assert_eq!(d, data),
            other => panic!("{other:?}"),
        }
        match round_trip(Down::Piece {
            id: 9,
            piece: Piece::Data(bytes::Bytes::new()),
        }) {
            Down::Piece {
                id: 9,
                piece: Piece::Data(d),
            } => assert!(d.is_empty()),
            other => panic!("{other:?}"),
        }
        // The end of a stream, and any other message, is JSON.
        let end = Piece::End(Ok("ab".into()));
        match round_trip(Up::Piece {
            id: 3,
            piece: end.clone(),
        }) {
            Up::Piece { id: 3, piece } => assert_eq!(piece, end),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            round_trip(Down::Cancel { id: 4 }),
            Down::Cancel { id: 4 }
        ));
    }
}
