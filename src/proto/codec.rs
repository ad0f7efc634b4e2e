//! The protobuf codec every generated baton client and server uses: prost's,
//! with small per-call buffers.
//!
//! tonic gives each call an encode buffer and a decode buffer of 8 KiB by
//! default (`BufferSettings`), allocated when the call starts and kept for
//! its whole life. A wait stream carries two or three messages of under 100
//! bytes in a life that can last hours, and a server may hold 100,000 of
//! them: the encode buffer alone was 8 KiB of the 10.8 KB each waiting gRPC
//! stream cost (`baton-bench --scenarios waiters`, BENCHMARKS.md). A buffer
//! grows when a message needs it (a long `List` answer), so a small start
//! costs nothing but a reallocation on the rare large message.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Bytes a call's encode and decode buffers start with: room for a few
/// of baton's messages, which are all small but for `List` answers.
pub const CALL_BUFFER_BYTES: usize = 128;

/// Bytes encoded before a stream hands a chunk to the transport (tonic's
/// default, kept).
pub const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// prost's codec with [`CALL_BUFFER_BYTES`] buffers; named by `build.rs`
/// as the codec of every generated service and client.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(CALL_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
