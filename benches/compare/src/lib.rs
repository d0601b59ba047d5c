//! Shared by the servers and the load client.

/// The bytes of a message or chunk of `len` bytes at offset 0: printable ASCII (valid UTF-8,
/// so text messages can carry it too), varying with the position.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((i * 7 + i / 26) % 26) as u8).collect()
}
