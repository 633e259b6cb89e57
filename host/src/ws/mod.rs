//! The server side of WebSocket (RFC 6455), written for this hub: the HTTP upgrade
//! ([`handshake`]) and the frame codec ([`codec`]).
//!
//! Why not tungstenite on the host: the hub needs (1) a message-size limit that changes when a
//! connection authenticates and is enforced at the frame header, before a byte of payload is
//! buffered; (2) no read buffer held by an idle connection (reads go through a stack buffer;
//! only a frame split across reads is kept on the heap, and only until it completes); and (3)
//! frames encoded once and shared by every recipient of a broadcast (server frames are not
//! masked, so the same bytes go to every socket). Followers and tests still use
//! tokio-tungstenite as the client, which checks every frame we send.
//!
//! Scope: text, binary (refused by the protocol layer), ping/pong and close frames,
//! fragmentation, UTF-8 validation of text, no extensions, no subprotocols.

pub mod codec;
pub mod handshake;
