//! Process the frame

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use log::trace;
use tokio_util::codec::{Decoder, Encoder};

use crate::{
    HEADER_SIZE, PROTOCOL_VERSION, RESERVED_STREAM_ID, StreamId, config::INITIAL_STREAM_WINDOW,
};

/// Patched: the room the decoder keeps free for the next read once it has
/// seen traffic, so a read takes every frame waiting on the socket. Exactly
/// sized reads (a 12-byte header, then the body) filled the buffer each
/// time, and a full read never tells the runtime that the socket is
/// drained: every batch of frames cost several reads and a last one that
/// found nothing.
const READ_CHUNK: usize = 8 * 1024;
/// Patched (ninth change): the most room a data frame's header makes us
/// reserve for its body before any of the body has arrived.
pub(crate) const BODY_RESERVE_FLOOR: usize = 64 * 1024;

/// Room to reserve for the `missing` rest of a body of which `received`
/// bytes are here: all of it when short, else no more than what arrived
/// (or the floor), so the reservation grows only as the peer sends.
fn body_reserve(missing: usize, received: usize) -> usize {
    missing.min(received.max(BODY_RESERVE_FLOOR)).max(READ_CHUNK)
}

/// The base message type is frame
#[derive(Debug, Eq, PartialEq)]
pub struct Frame {
    header: Header,
    body: Option<BytesMut>,
}

impl Frame {
    /// Create a data frame
    pub fn new_data(flags: Flags, stream_id: StreamId, body: BytesMut) -> Frame {
        Frame {
            header: Header {
                version: PROTOCOL_VERSION,
                ty: Type::Data,
                flags,
                stream_id,
                length: body.len() as u32,
            },
            body: Some(body),
        }
    }

    /// Create a window update frame
    pub fn new_window_update(flags: Flags, stream_id: StreamId, delta: u32) -> Frame {
        Frame {
            header: Header {
                version: PROTOCOL_VERSION,
                ty: Type::WindowUpdate,
                flags,
                stream_id,
                length: delta,
            },
            body: None,
        }
    }

    /// Create a ping frame
    pub fn new_ping(flags: Flags, ping_id: u32) -> Frame {
        Frame {
            header: Header {
                version: PROTOCOL_VERSION,
                ty: Type::Ping,
                flags,
                stream_id: RESERVED_STREAM_ID,
                length: ping_id,
            },
            body: None,
        }
    }

    /// Create a go away frame
    pub fn new_go_away(reason: GoAwayCode) -> Frame {
        Frame {
            header: Header {
                version: PROTOCOL_VERSION,
                ty: Type::GoAway,
                flags: Flags::default(),
                stream_id: RESERVED_STREAM_ID,
                length: reason as u32,
            },
            body: None,
        }
    }

    /// The type of current frame
    pub fn ty(&self) -> Type {
        self.header.ty
    }

    /// The stream id of current frame
    pub fn stream_id(&self) -> StreamId {
        self.header.stream_id
    }

    /// The flags of current frame
    pub fn flags(&self) -> Flags {
        self.header.flags
    }

    /// The length field of current body or some other things such as ping_id/go away code/delta
    pub fn length(&self) -> u32 {
        self.header.length
    }

    /// Consume current frame split into header and body
    pub fn into_parts(self) -> (Header, Option<BytesMut>) {
        (self.header, self.body)
    }

    /// The length field of current frame
    pub fn size(&self) -> usize {
        if self.body.is_some() {
            self.header.length as usize + HEADER_SIZE
        } else {
            HEADER_SIZE
        }
    }
}

/// The frame header
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Header {
    version: u8,
    ty: Type,
    flags: Flags,
    stream_id: StreamId,
    length: u32,
}

impl Header {
    /// Patched: the 12 header bytes, shared by the codec and the session's
    /// write queue.
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.version);
        dst.put_u8(self.ty as u8);
        dst.put_u16(self.flags.value());
        dst.put_u32(self.stream_id);
        dst.put_u32(self.length);
    }
}

/// The type field is used to switch the frame message type.
/// The following message types are supported:
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
#[repr(u8)]
pub enum Type {
    /// Used to transmit data.
    /// May transmit zero length payloads depending on the flags.
    Data = 0x0,

    /// Used to updated the senders receive window size.
    /// This is used to implement per-session flow control.
    WindowUpdate = 0x1,

    /// Used to measure RTT.
    /// It can also be used to heart-beat and do keep-alives over TCP.
    Ping = 0x2,

    /// Used to close a session.
    GoAway = 0x3,
}

impl Type {
    pub(crate) fn try_from(value: u8) -> Option<Type> {
        match value {
            0x0 => Some(Type::Data),
            0x1 => Some(Type::WindowUpdate),
            0x2 => Some(Type::Ping),
            0x3 => Some(Type::GoAway),
            _ => None,
        }
    }
}

/// The frame flag
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
#[repr(u16)]
pub enum Flag {
    /// SYN - Signals the start of a new stream.
    ///   May be sent with a data or window update message.
    ///   Also sent with a ping to indicate outbound.
    Syn = 0x1,

    /// ACK - Acknowledges the start of a new stream.
    ///   May be sent with a data or window update message.
    ///   Also sent with a ping to indicate response.
    Ack = 0x2,

    /// FIN (finish) - Performs a half-close of a stream.
    ///   May be sent with a data message or window update.
    Fin = 0x4,

    /// RST - Reset a stream immediately.
    ///   May be sent with a data or window update message.
    Rst = 0x8,
}

impl From<Flag> for Flags {
    fn from(value: Flag) -> Flags {
        Flags(value as u16)
    }
}

/// Represent all flags of a frame
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq)]
pub struct Flags(u16);

impl Flags {
    /// Add a flag
    pub fn add(&mut self, flag: Flag) {
        self.0 |= flag as u16;
    }

    /// Remove a flag
    pub fn remove(&mut self, flag: Flag) {
        self.0 ^= flag as u16;
    }

    /// Check if contains a target flag
    pub fn contains(self, flag: Flag) -> bool {
        let flag_value = flag as u16;
        (self.0 & flag_value) == flag_value
    }

    /// The value of all flags
    pub fn value(self) -> u16 {
        self.0
    }
}

/// When a session is being terminated, the Go Away message should
/// be sent. The Length should be set to one of the following to
/// provide an error code:
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
#[repr(u32)]
pub enum GoAwayCode {
    /// Normal termination
    Normal = 0x0,
    /// Protocol error
    ProtocolError = 0x1,
    /// Internal error
    InternalError = 0x2,
}

impl From<u32> for GoAwayCode {
    fn from(value: u32) -> GoAwayCode {
        match value {
            0x0 => GoAwayCode::Normal,
            0x1 => GoAwayCode::ProtocolError,
            0x2 => GoAwayCode::InternalError,
            _ => GoAwayCode::ProtocolError,
        }
    }
}

/// The frame decoder/encoder
pub struct FrameCodec {
    unused_data_header: Option<Header>,
    max_frame_size: u32,
    /// Patched (twelfth change): the buffer decoded from is filled with
    /// the buffers the connection's reads arrived in, so the codec makes
    /// no room in it for reads.
    owned_reads: bool,
}

impl FrameCodec {
    /// Set max frame size
    pub fn max_frame_size(mut self, size: u32) -> Self {
        self.max_frame_size = size;
        self
    }

    /// Patched: decode from buffers that arrive owned (no room is made in
    /// the buffer for reads).
    pub fn owned_reads(mut self, owned: bool) -> Self {
        self.owned_reads = owned;
        self
    }

    /// Patched (twelfth change): the length of the body that a data
    /// frame's header, already decoded, waits for.
    pub(crate) fn awaited_body(&self) -> Option<usize> {
        self.unused_data_header
            .as_ref()
            .map(|header| header.length as usize)
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self {
            unused_data_header: None,
            max_frame_size: INITIAL_STREAM_WINDOW,
            owned_reads: false,
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        trace!("FrameCodec decode src.len={}", src.len());
        if src.is_empty() {
            if self.owned_reads {
                return Ok(None);
            }
            // Patched: an empty buffer gets about `READ_CHUNK` of room, not
            // more. A larger room let the read that brings a large frame's
            // header take most of its body too; finishing the frame then
            // moved all of it into a bigger buffer (the buffer cannot grow
            // in place while earlier bodies still share it).
            if !(READ_CHUNK..=2 * READ_CHUNK).contains(&src.capacity()) {
                *src = BytesMut::with_capacity(READ_CHUNK);
            }
            return Ok(None);
        }
        let header = match self.unused_data_header.take() {
            Some(header) => header,
            None if src.len() >= HEADER_SIZE => {
                let mut header_data = src.split_to(HEADER_SIZE);

                let version = header_data.get_u8();
                if version != PROTOCOL_VERSION {
                    let err = io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("yamux.version={}", version),
                    );
                    return Err(err);
                }
                let ty_value = header_data.get_u8();
                let ty = match Type::try_from(ty_value) {
                    Some(ty) => ty,
                    None => {
                        let err = io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("yamux.type={}", ty_value),
                        );
                        return Err(err);
                    }
                };

                let flags = Flags(header_data.get_u16());
                let stream_id = header_data.get_u32();
                let length = header_data.get_u32();
                if ty == Type::Data && length > self.max_frame_size {
                    let err = io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("yamux.length={}", length),
                    );
                    return Err(err);
                }
                Header {
                    version,
                    ty,
                    flags,
                    stream_id,
                    length,
                }
            }
            None => {
                trace!("not enough data for decode header");
                if !self.owned_reads {
                    src.reserve(READ_CHUNK);
                }
                return Ok(None);
            }
        };

        let body = if header.ty == Type::Data {
            if src.len() < header.length as usize {
                trace!("not enough data for decode body");
                // Patched: make room for the whole rest of the body at
                // once (at most `max_frame_size`, the stream window a peer
                // may fill anyway), so it is read in few large reads and
                // what is read so far moves at most once. A short rest
                // gets `READ_CHUNK`, so the frames behind it come in the
                // same read.
                // Ninth change: the room reserved up front is at most
                // `BODY_RESERVE_FLOOR`, then grows with what has arrived,
                // so a 12-byte header alone cannot make us hold a whole
                // window's worth of memory.
                if !self.owned_reads {
                    let missing = header.length as usize - src.len();
                    src.reserve(body_reserve(missing, src.len()));
                }
                self.unused_data_header = Some(header);
                return Ok(None);
            } else {
                Some(src.split_to(header.length as usize))
            }
        } else {
            // Not data frame
            None
        };

        Ok(Some(Frame { header, body }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = io::Error;
    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        trace!("FrameCodec encode item.size={}", item.size());
        // Must ensure that there is enough space in the buf
        dst.reserve(item.size());
        let (header, body) = item.into_parts();
        header.encode(dst);
        if let Some(data) = body {
            dst.put(data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::{Flags, Frame, FrameCodec, HEADER_SIZE, INITIAL_STREAM_WINDOW, Type};
    use bytes::{BufMut, BytesMut};
    use std::io;
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn test_decode_encode() {
        let rand_data = BytesMut::from(
            (0..512)
                .map(|_| rand::random::<u8>())
                .collect::<Vec<_>>()
                .as_slice(),
        );
        let frame = Frame::new_data(Flags(1), 1, rand_data.clone());
        let mut data = BytesMut::default();

        let mut codec = FrameCodec {
            unused_data_header: None,
            max_frame_size: INITIAL_STREAM_WINDOW,
            owned_reads: false,
        };

        codec.encode(frame, &mut data).unwrap();

        let decode_frame = codec.decode(&mut data).unwrap().unwrap();

        assert_eq!(decode_frame.flags(), Flags(1));
        assert_eq!(decode_frame.stream_id(), 1);
        assert_eq!(decode_frame.ty(), Type::Data);
        assert_eq!(decode_frame.size(), 512 + HEADER_SIZE);

        let (_, data) = decode_frame.into_parts();

        assert_eq!(data.unwrap(), rand_data)
    }

    #[test]
    fn test_decode_too_large() {
        let rand_data = BytesMut::from(
            (0..512)
                .map(|_| rand::random::<u8>())
                .collect::<Vec<_>>()
                .as_slice(),
        );
        let frame = Frame::new_data(Flags(1), 1, rand_data);
        let mut data = BytesMut::default();

        let mut codec = FrameCodec {
            unused_data_header: None,
            max_frame_size: INITIAL_STREAM_WINDOW,
            owned_reads: false,
        };

        codec.encode(frame, &mut data).unwrap();

        let mut codec_2 = FrameCodec {
            unused_data_header: None,
            max_frame_size: 256,
        };

        assert_eq!(
            codec_2.decode(&mut data).unwrap_err().to_string(),
            "yamux.length=512"
        );
        assert_eq!(
            codec_2.decode(&mut data).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn test_invalid_frame() {
        let rand_data = BytesMut::from(
            (0..512)
                .map(|_| rand::random::<u8>())
                .collect::<Vec<_>>()
                .as_slice(),
        );

        let mut frame = Frame::new_data(Flags(1), 1, rand_data.clone());
        frame.header.version = 9;
        let mut data = BytesMut::default();

        let mut codec = FrameCodec {
            unused_data_header: None,
            max_frame_size: INITIAL_STREAM_WINDOW,
            owned_reads: false,
        };

        codec.encode(frame, &mut data).unwrap();

        assert_eq!(
            codec.decode(&mut data).unwrap_err().to_string(),
            "yamux.version=9"
        );
        assert_eq!(
            codec.decode(&mut data).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );

        let frame = Frame::new_data(Flags(1), 1, rand_data);

        data.clear();

        data.reserve(frame.size());
        let (header, body) = frame.into_parts();
        data.put_u8(header.version);
        // wrong type set
        data.put_u8(6);
        data.put_u16(header.flags.value());
        data.put_u32(header.stream_id);
        data.put_u32(header.length);
        if let Some(b) = body {
            data.put(b);
        }

        let mut codec = FrameCodec {
            unused_data_header: None,
            max_frame_size: INITIAL_STREAM_WINDOW,
            owned_reads: false,
        };

        assert_eq!(
            codec.decode(&mut data).unwrap_err().to_string(),
            "yamux.type=6"
        );
        assert_eq!(
            codec.decode(&mut data).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_header_alone_reserves_at_most_the_floor_for_its_body() {
        // A 1 MiB data frame's header for a stream that does not exist,
        // and none of its body.
        let mut codec = FrameCodec::default().max_frame_size(1 << 20);
        let mut data = BytesMut::new();
        Frame::new_data(Flags(0), 99, BytesMut::zeroed(1 << 20))
            .into_parts()
            .0
            .encode(&mut data);
        assert!(codec.decode(&mut data).unwrap().is_none());
        assert!(
            data.capacity() <= BODY_RESERVE_FLOOR + HEADER_SIZE,
            "{} bytes reserved",
            data.capacity()
        );
        // The reservation grows with what arrives, never past the body.
        assert_eq!(body_reserve(1 << 20, 0), BODY_RESERVE_FLOOR);
        assert_eq!(body_reserve(1 << 20, 300_000), 300_000);
        assert_eq!(body_reserve(100, 0), READ_CHUNK);
        assert_eq!(body_reserve(200_000, 500_000), 200_000);
    }
}
