//! AWS Signature Version 4, verified: what AWS's clients (the CLI, boto3, every SDK) sign each
//! request with. The request is signed again here with the secret of the access key it names,
//! at the time it says, and the two signatures compared in constant time (HMAC-SHA256 from the
//! RustCrypto `hmac` crate; the canonical request as AWS's documentation defines it, with
//! non-S3 path encoding).

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::clock::{NANOS_PER_SEC, Nanos};

type HmacSha256 = hmac::Hmac<Sha256>;

/// How far a request's time may be from ours (AWS: 15 minutes).
pub const MAX_SKEW: Nanos = 15 * 60 * NANOS_PER_SEC;

/// Why a signed request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("the Authorization header is not a Signature Version 4 one")]
    Malformed,
    #[error("the X-Amz-Date header is missing or not a time (YYYYMMDD'T'HHMMSS'Z')")]
    BadDate,
    #[error("the request's time is more than 15 minutes from the server's")]
    Skewed,
    #[error("the credential scope is not this date's, or not for the apigateway service")]
    BadScope,
    #[error("the access key is not known")]
    UnknownKey,
    #[error("the signature does not match")]
    Mismatch,
}

/// The parts of a request a signature covers.
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded as the client encoded it).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Header value by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    pub body: &'a [u8],
}

/// The access key a valid signature was made with, given `secret_of` to look up secrets.
pub fn verify<'s>(
    req: &Signed<'_>,
    now: Nanos,
    secret_of: impl Fn(&str) -> Option<&'s str>,
) -> Result<String, SigError> {
    let auth = (req.header)("authorization").ok_or(SigError::Malformed)?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(SigError::Malformed)?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SigError::Malformed)?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => return Err(SigError::Malformed),
        }
    }
    let (credential, signed_headers, signature) = (
        credential.ok_or(SigError::Malformed)?,
        signed_headers.ok_or(SigError::Malformed)?,
        signature.ok_or(SigError::Malformed)?,
    );
    let mut scope = credential.splitn(5, '/');
    let (key, date, region, service, terminator) = (
        scope.next().ok_or(SigError::Malformed)?,
        scope.next().ok_or(SigError::Malformed)?,
        scope.next().ok_or(SigError::Malformed)?,
        scope.next().ok_or(SigError::Malformed)?,
        scope.next().ok_or(SigError::Malformed)?,
    );
    let amz_date = (req.header)("x-amz-date").ok_or(SigError::BadDate)?;
    let at = parse_amz_date(amz_date).ok_or(SigError::BadDate)?;
    if (now - at).abs() > MAX_SKEW {
        return Err(SigError::Skewed);
    }
    if !amz_date.starts_with(date)
        || date.len() != 8
        || service != "apigateway"
        || terminator != "aws4_request"
    {
        return Err(SigError::BadScope);
    }
    let secret = secret_of(key).ok_or(SigError::UnknownKey)?;
    let canonical = canonical_request(req, signed_headers)?;
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let signing = [date, region, service, "aws4_request"]
        .iter()
        .fold(format!("AWS4{secret}").into_bytes(), |k, part| {
            hmac(&k, part.as_bytes())
        });
    let presented = hex::decode(signature).map_err(|_| SigError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(&signing).map_err(|_| SigError::Malformed)?;
    mac.update(to_sign.as_bytes());
    mac.verify_slice(&presented)
        .map_err(|_| SigError::Mismatch)?;
    Ok(key.to_owned())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `20261202T061000Z` as nanoseconds since the epoch.
fn parse_amz_date(s: &str) -> Option<Nanos> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    t.and_utc().timestamp_nanos_opt()
}

/// AWS's canonical request for the headers the client signed.
fn canonical_request(req: &Signed<'_>, signed_headers: &str) -> Result<String, SigError> {
    let mut headers = String::new();
    for name in signed_headers.split(';') {
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(SigError::Malformed);
        }
        let value = (req.header)(name).ok_or(SigError::Malformed)?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        headers.push_str(&format!("{name}:{value}\n"));
    }
    let mut query: Vec<(String, String)> = req
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k), false), encode(&decode(v), false))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(format!(
        "{}\n{}\n{}\n{headers}\n{signed_headers}\n{}",
        req.method,
        // Outside S3 the path is encoded once more, as sent (`%7B` becomes `%257B`).
        encode(req.path, true),
        query.join("&"),
        hex::encode(Sha256::digest(req.body))
    ))
}

/// RFC 3986 encoding: everything but unreserved characters (and `/`, when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decoding (a malformed escape stays as written).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (the Signature Version 4 documentation's IAM `ListUsers`
    /// request), with the service checked as apigateway here: the scope is what differs, so
    /// the arithmetic is checked on AWS's own numbers through `canonical_request` and the key
    /// derivation.
    #[test]
    fn aws_documentation_example() {
        let headers = |name: &str| match name {
            "content-type" => Some("application/x-www-form-urlencoded; charset=utf-8"),
            "host" => Some("iam.amazonaws.com"),
            "x-amz-date" => Some("20150830T123600Z"),
            _ => None,
        };
        let req = Signed {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            header: &headers,
            body: b"",
        };
        let canonical = canonical_request(&req, "content-type;host;x-amz-date").unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let signing = ["20150830", "us-east-1", "iam", "aws4_request"]
            .iter()
            .fold(
                b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_vec(),
                |k, p| hmac(&k, p.as_bytes()),
            );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        assert_eq!(
            hex::encode(hmac(&signing, to_sign.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn paths_are_encoded_once_more() {
        assert_eq!(encode("/restapis/a%7Bb", true), "/restapis/a%257Bb");
        assert_eq!(encode("a b/c", false), "a%20b%2Fc");
        assert_eq!(decode("a%20b%zz"), "a b%zz");
    }
}
