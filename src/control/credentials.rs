//! The access keys AWS clients sign with: a CSV file (`serve --aws-credentials FILE`) with the
//! header `access_key_id,secret_access_key,role`, role `read` (reads only) or `admin`. Read again
//! when it changes, like the certificates; a file that stops reading keeps the keys last read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Admin,
}

/// Access key id → (secret, role).
pub type Keys = HashMap<String, (String, Role)>;

/// The credentials file, read when its modification time changes.
pub struct CredentialsFile {
    path: PathBuf,
    last: Mutex<(Option<SystemTime>, Arc<Keys>)>,
}

impl CredentialsFile {
    /// Reads `path` now: a file that does not read is an error at start.
    pub fn open(path: PathBuf) -> Result<Self, String> {
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let keys = parse(&std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(CredentialsFile {
            path,
            last: Mutex::new((modified, Arc::new(keys))),
        })
    }

    /// The keys in force: read again when the file changed (its errors logged, the keys last
    /// read kept).
    pub fn keys(&self) -> Arc<Keys> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut last = self.last.lock();
        if modified.is_some() && modified != last.0 {
            match std::fs::read(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|b| parse(&b))
            {
                Ok(keys) => {
                    tracing::info!(file = %self.path.display(), keys = keys.len(), "AWS credentials read");
                    *last = (modified, Arc::new(keys));
                }
                Err(e) => {
                    tracing::error!(file = %self.path.display(), error = %e, "AWS credentials not read again; the keys last read are kept");
                    last.0 = modified;
                }
            }
        }
        last.1.clone()
    }
}

/// The file's keys, or the first problem (its line; never a secret).
fn parse(bytes: &[u8]) -> Result<Keys, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = rdr
        .headers()
        .map_err(|e| format!("header line: {e}"))?
        .clone();
    if headers.iter().collect::<Vec<_>>() != ["access_key_id", "secret_access_key", "role"] {
        return Err("the header line must be `access_key_id,secret_access_key,role`".into());
    }
    let mut keys = Keys::new();
    for (i, record) in rdr.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|_| format!("line {line}: not a CSV record"))?;
        let (id, secret, role) = (&record[0], &record[1], &record[2]);
        let role = match role {
            "read" => Role::Read,
            "admin" => Role::Admin,
            _ => return Err(format!("line {line}: the role must be `read` or `admin`")),
        };
        if id.is_empty() || secret.is_empty() {
            return Err(format!("line {line}: an empty access key id or secret"));
        }
        if keys
            .insert(id.to_owned(), (secret.to_owned(), role))
            .is_some()
        {
            return Err(format!("line {line}: access key `{id}` appears twice"));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_keys_and_roles() {
        let k =
            parse(b"access_key_id,secret_access_key,role\nAK1,s1,admin\nAK2,s2,read\n").unwrap();
        assert_eq!(k["AK1"], ("s1".to_owned(), Role::Admin));
        assert_eq!(k["AK2"].1, Role::Read);
        for bad in [
            &b"id,secret,role\n"[..],
            b"access_key_id,secret_access_key,role\nAK1,s1,root\n",
            b"access_key_id,secret_access_key,role\nAK1,,admin\n",
            b"access_key_id,secret_access_key,role\nAK1,a,admin\nAK1,b,read\n",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("s1") && !e.contains(",a,"), "{e}");
        }
    }
}
