//! The reading side of the codec: a frame's header checked (RFC 6455 section 5.2), data
//! frames put together into messages (section 5.4) with their fragments counted, text checked
//! for UTF-8 as it arrives (section 8.1), compressed messages inflated (RFC 7692).

use async_tungstenite::tungstenite::Bytes;
use async_tungstenite::tungstenite::{
    Message, error::ProtocolError, protocol::frame::coding::Data,
};

use super::Violation;
use super::wire::{close_frame, frame_header, message, unmask, unmask_into, unmasked};
use super::{Event, MAX_HEADER};

/// The reading side's state between frames.
pub(super) struct Rx {
    /// The data message being reassembled from its frames (RFC 6455 section 5.4).
    /// Boxed: only a message in several frames, or a compressed one, has it (it holds
    /// an inflater of about 150 bytes), and an idle connection keeps none.
    pub(super) partial: Option<Box<Partial>>,
    /// Payload bytes still to skip of a frame ignored while closing.
    pub(super) skip: u64,
    pub(super) max_frame: usize,
    pub(super) max_message: usize,
    pub(super) max_fragments: usize,
    /// Whether permessage-deflate was agreed (RFC 7692): RSV1 on a message's first frame
    /// then means its payload is compressed.
    pub(super) deflate: bool,
    /// The UTF-8 check of a text frame that is partly here, as its bytes arrive.
    pub(super) scan: Scan,
}

/// A data message whose frames are arriving (RFC 6455 section 5.4).
pub(super) struct Partial {
    pub(super) text: bool,
    /// The payload so far, unmasked (and inflated).
    pub(super) payload: Vec<u8>,
    /// Its frames so far.
    pub(super) frames: usize,
    /// How much of `payload` is known to be UTF-8 (a text message): what follows is at most
    /// the start of a character that the next frame completes.
    pub(super) checked: usize,
    /// The inflater of a compressed message (RFC 7692 section 7.2.2).
    pub(super) inflater: Option<flate2::Decompress>,
}

/// How far the UTF-8 check of a partly received text frame has come: the payload bytes
/// checked, and the start of a character they left unfinished.
#[derive(Default)]
pub(super) struct Scan {
    pub(super) done: u64,
    pub(super) tail: [u8; 3],
    pub(super) tail_len: u8,
}

impl Rx {
    /// How many bytes the frame that starts `data` takes, header and payload, once its
    /// header is here; else the longest header.
    pub(super) fn wanted(&self, data: &[u8]) -> usize {
        match frame_header(data) {
            Some((len, header_len)) if self.skip == 0 => {
                header_len
                    + usize::try_from(len)
                        .unwrap_or(usize::MAX)
                        .min(self.max_frame)
            }
            _ => MAX_HEADER,
        }
    }

    /// Reads and checks the header of the frame that starts `data` (RFC 6455 section 5.2):
    /// whether the frame is all there, or how many bytes were skipped. While `closing`, only
    /// a close frame counts: anything else is skipped as it arrives, and a bad close frame
    /// ends it all the same.
    ///
    /// # Errors
    /// The protocol violation or size limit that fails the connection.
    pub(super) fn head(&mut self, data: &[u8], closing: bool) -> Result<Step, Violation> {
        if self.skip > 0 {
            let n = self.skip.min(data.len() as u64);
            self.skip -= n;
            return Ok(Step::Skipped(n as usize));
        }
        let Some((len, header_len)) = frame_header(data) else {
            return Ok(Step::Incomplete);
        };
        let (fin, opcode) = (data[0] & 0x80 != 0, data[0] & 0x0F);
        if closing && opcode != 8 {
            // Skipped, as it arrives: it need not fit in memory.
            let here = (data.len() - header_len) as u64;
            let n = len.min(here);
            self.skip = len - n;
            return Ok(Step::Skipped(header_len + n as usize));
        }
        // RSV1 marks a compressed message's first frame when permessage-deflate was agreed
        // (RFC 7692 section 6); any other reserved bit, or RSV1 elsewhere, fails.
        let rsv1 = data[0] & 0x40 != 0;
        let compressed_start = rsv1 && self.deflate && matches!(opcode, 1 | 2);
        if data[0] & 0x30 != 0 || (rsv1 && !compressed_start) {
            return Err(Violation::Protocol(ProtocolError::NonZeroReservedBits));
        }
        if data[1] & 0x80 == 0 {
            return Err(Violation::Protocol(ProtocolError::UnmaskedFrameFromClient));
        }
        if opcode >= 8 {
            if !fin {
                return Err(Violation::Protocol(ProtocolError::FragmentedControlFrame));
            }
            if len > 125 {
                return Err(Violation::Protocol(ProtocolError::ControlFrameTooBig));
            }
            if opcode > 10 {
                return Err(Violation::Protocol(ProtocolError::UnknownControlFrameType(
                    opcode,
                )));
            }
        } else {
            if opcode > 2 {
                return Err(Violation::Protocol(ProtocolError::UnknownDataFrameType(
                    opcode,
                )));
            }
            // The message so far: its bytes, its frames, and whether it is being inflated.
            let (so_far, frames, inflating) = self.partial.as_deref().map_or((0, 0, false), |p| {
                (p.payload.len(), p.frames, p.inflater.is_some())
            });
            if frames >= self.max_fragments {
                return Err(Violation::TooManyFragments {
                    max: self.max_fragments,
                });
            }
            let compressed = compressed_start || inflating;
            match (opcode, &self.partial) {
                (0, None) => {
                    return Err(Violation::Protocol(ProtocolError::UnexpectedContinueFrame));
                }
                (1 | 2, Some(_)) => {
                    return Err(Violation::Protocol(ProtocolError::ExpectedFragment(
                        Data::Continue,
                    )));
                }
                _ => {}
            }
            if len > self.max_frame as u64 {
                return Err(Violation::FrameTooBig {
                    size: len,
                    max: self.max_frame,
                });
            }
            // A compressed frame's size says little of what it inflates to: that is checked
            // as it inflates.
            if !compressed && so_far as u64 + len > self.max_message as u64 {
                return Err(Violation::MessageTooBig {
                    size: so_far as u64 + len,
                    max: self.max_message,
                });
            }
        }
        let total = header_len + len as usize;
        if data.len() < total {
            return Ok(Step::Incomplete);
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&data[header_len - 4..header_len]);
        Ok(Step::Frame(Head {
            fin,
            opcode,
            compressed: compressed_start,
            header_len,
            total,
            key,
        }))
    }

    /// Parses the frame that starts `data`, if it is all there: the bytes it took (0 when
    /// it is not complete yet) and what it gave.
    ///
    /// # Errors
    /// As [`Rx::head`], or invalid UTF-8 in a text message or close reason.
    pub(super) fn parse(
        &mut self,
        data: &[u8],
        closing: bool,
    ) -> Result<(usize, Option<Event>), Violation> {
        match self.head(data, closing)? {
            Step::Incomplete => Ok((0, None)),
            Step::Skipped(n) => Ok((n, None)),
            Step::Frame(head) => {
                let payload = Payload::Masked(&data[head.header_len..head.total]);
                Ok((head.total, self.event(&head, payload)?))
            }
        }
    }

    /// What the complete frame `head` gave, with its payload.
    pub(super) fn event(
        &mut self,
        head: &Head,
        payload: Payload<'_>,
    ) -> Result<Option<Event>, Violation> {
        // The next frame's UTF-8 check starts afresh.
        self.scan = Scan::default();
        let key = head.key;
        let whole = |payload: Payload<'_>| match payload {
            Payload::Masked(data) => Bytes::from(unmasked(data, key)),
            Payload::Unmasked(bytes) => bytes,
        };
        Ok(match head.opcode {
            1 | 2 if head.fin && !head.compressed => {
                Some(Event::Message(message(head.opcode == 1, whole(payload))?))
            }
            1 | 2 => {
                let mut partial = Box::new(Partial {
                    text: head.opcode == 1,
                    payload: Vec::new(),
                    frames: 0,
                    checked: 0,
                    inflater: head.compressed.then(crate::deflate::inflater),
                });
                self.append(&mut partial, head, payload)?;
                self.complete(partial, head.fin)?
            }
            0 => {
                let mut partial = self.partial.take().expect("checked by Rx::head");
                self.append(&mut partial, head, payload)?;
                self.complete(partial, head.fin)?
            }
            8 => Some(Event::Close(close_frame(whole(payload))?)),
            9 => Some(Event::Message(Message::Ping(whole(payload)))),
            _ => Some(Event::Message(Message::Pong(whole(payload)))),
        })
    }

    /// Adds a data frame's payload to the message: unmasked, inflated when the message is
    /// compressed, and checked for UTF-8 so far when it is text and more frames follow.
    pub(super) fn append(
        &self,
        partial: &mut Partial,
        head: &Head,
        payload: Payload<'_>,
    ) -> Result<(), Violation> {
        partial.frames += 1;
        match &mut partial.inflater {
            None => match payload {
                Payload::Masked(data) => unmask_into(&mut partial.payload, data, head.key),
                Payload::Unmasked(bytes) => partial.payload.extend_from_slice(&bytes),
            },
            Some(inflater) => {
                let input = match payload {
                    Payload::Masked(data) => Bytes::from(unmasked(data, head.key)),
                    Payload::Unmasked(bytes) => bytes,
                };
                let out = &mut partial.payload;
                crate::deflate::inflate_into(inflater, &input, head.fin, out, self.max_message)?;
            }
        }
        // The last frame's check is the whole message's (`message`).
        if partial.text && !head.fin {
            match std::str::from_utf8(&partial.payload[partial.checked..]) {
                Ok(_) => partial.checked = partial.payload.len(),
                Err(e) if e.error_len().is_some() => return Err(Violation::InvalidUtf8),
                Err(e) => partial.checked += e.valid_up_to(),
            }
        }
        Ok(())
    }

    /// The message, once its last frame is in; else it waits for the next.
    pub(super) fn complete(
        &mut self,
        mut partial: Box<Partial>,
        fin: bool,
    ) -> Result<Option<Event>, Violation> {
        if !fin {
            self.partial = Some(partial);
            return Ok(None);
        }
        if let Some(inflater) = partial.inflater.take() {
            crate::deflate::done_with(inflater);
        }
        Ok(Some(Event::Message(message(
            partial.text,
            partial.payload.into(),
        )?)))
    }

    /// Checks the bytes of a text frame that is partly here (`data` starts with its header)
    /// for UTF-8, from where the last look stopped: a text message that turns invalid fails
    /// at the bytes that break it, before the rest of the frame arrives.
    ///
    /// # Errors
    /// Invalid UTF-8.
    pub(super) fn scan(&mut self, data: &[u8], closing: bool) -> Result<(), Violation> {
        let Some((len, header_len)) = frame_header(data) else {
            return Ok(());
        };
        let opcode = data[0] & 0x0F;
        let text = match (opcode, &self.partial) {
            (1, None) => data[0] & 0x40 == 0,
            (0, Some(p)) => p.text && p.inflater.is_none(),
            _ => false,
        };
        if closing || self.skip > 0 || !text || data[1] & 0x80 == 0 {
            return Ok(());
        }
        if self.scan.done == 0 {
            // Where the message so far left off: the start of an unfinished character.
            let tail = self
                .partial
                .as_ref()
                .map_or(&[][..], |p| &p.payload[p.checked..]);
            self.scan.tail[..tail.len()].copy_from_slice(tail);
            self.scan.tail_len = tail.len() as u8;
        }
        let here = &data[header_len..];
        let end = here.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let from = self.scan.done as usize;
        if from >= end {
            return Ok(());
        }
        let raw = &data[header_len - 4..header_len];
        let mut block = [0u8; 512];
        for chunk in here[from..end].chunks(block.len() - 3) {
            let start = usize::from(self.scan.tail_len);
            block[..start].copy_from_slice(&self.scan.tail[..start]);
            let stop = start + chunk.len();
            block[start..stop].copy_from_slice(chunk);
            // The key as it falls on this chunk's first byte (RFC 6455 section 5.3).
            let at = self.scan.done as usize;
            let key = [0, 1, 2, 3].map(|i| raw[(at + i) % 4]);
            unmask(&mut block[start..stop], key);
            self.scan.done += chunk.len() as u64;
            self.scan.tail_len = 0;
            if let Err(e) = std::str::from_utf8(&block[..stop]) {
                if e.error_len().is_some() {
                    return Err(Violation::InvalidUtf8);
                }
                let tail = &block[e.valid_up_to()..stop];
                self.scan.tail[..tail.len()].copy_from_slice(tail);
                self.scan.tail_len = tail.len() as u8;
            }
        }
        Ok(())
    }
}

/// A frame's header, read and checked, when all of the frame is here.
pub(super) struct Head {
    pub(super) fin: bool,
    pub(super) opcode: u8,
    /// The first frame of a compressed message (RSV1, permessage-deflate agreed).
    pub(super) compressed: bool,
    pub(super) header_len: usize,
    /// Header and payload.
    pub(super) total: usize,
    pub(super) key: [u8; 4],
}

/// What [`Rx::head`] found.
pub(super) enum Step {
    /// The frame is not all here yet.
    Incomplete,
    /// This many bytes of a frame ignored while closing were skipped.
    Skipped(usize),
    /// A whole frame.
    Frame(Head),
}

/// A complete frame's payload: as it came (masked) or unmasked already, in a buffer of
/// its own.
pub(super) enum Payload<'a> {
    Masked(&'a [u8]),
    Unmasked(Bytes),
}

/// The room a partly received frame of `wanted` bytes (header and payload) gets when `have`
/// of them are here: twice what came, at least [`MIN_ROOM`], at most the frame. So what a
/// peer makes the server hold follows what it sent, not what its header announced: a header
/// announcing 1 MiB followed by nothing costs 4 KiB, and a frame that does arrive grows its
/// buffer by doubling (a few reallocations, each copying what came).
pub(super) fn room(wanted: usize, have: usize) -> usize {
    wanted.min(have.saturating_mul(2).max(MIN_ROOM))
}

/// The least room a partly received frame gets: 4 KiB.
pub(super) const MIN_ROOM: usize = 4096;
