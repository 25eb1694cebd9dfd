//! Page tokens and page sizes of the management API's lists.

use tonic::Status;

/// A page token: an opaque form of the position to resume at.
pub fn token(position: &str) -> String {
    hex::encode(position)
}

pub fn position(token: &str) -> Result<String, Status> {
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Status::invalid_argument("page_token is not one this server gave"))
}

pub fn page_size(asked: u32, default: u32, max: u32) -> usize {
    (if asked == 0 { default } else { asked.min(max) }) as usize
}
