//! In-memory mod_db with byte-exact replies (capture `inbound-api-db` and README notes).

use std::sync::{Arc, Mutex};

/// Size of mod_db's `list` buffer: the joined `key,` text is cut to 4095 bytes and its last
/// byte dropped, so 2,000 keys give 4,094 bytes cut mid-key, as measured on the real switch.
const LIST_BUF: usize = 4096;

/// Shared handle on the fake's mod_db (clone freely; all clones see the same rows).
#[derive(Clone, Debug, Default)]
pub struct FakeDb {
    rows: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl FakeDb {
    /// Inserts or replaces `realm/key = value` (like `db insert`; the row moves to the end).
    pub fn seed(&self, realm: &str, key: &str, value: &str) {
        let mut rows = self.lock();
        rows.retain(|(r, k, _)| !(r == realm && k == key));
        rows.push((realm.to_string(), key.to_string(), value.to_string()));
    }

    /// Value of `realm/key`.
    pub fn get(&self, realm: &str, key: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(r, k, _)| r == realm && k == key)
            .map(|(_, _, v)| v.clone())
    }

    /// Keys of a realm in row order.
    pub fn keys(&self, realm: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(r, _, _)| r == realm)
            .map(|(_, k, _)| k.clone())
            .collect()
    }

    /// All rows `(realm, key, value)` in row order.
    pub fn rows(&self) -> Vec<(String, String, String)> {
        self.lock().clone()
    }

    /// Removes `realm/key`.
    pub fn delete(&self, realm: &str, key: &str) {
        self.lock().retain(|(r, k, _)| !(r == realm && k == key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String, String)>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the `db` API with argument `arg` (e.g. `exists/fallback/4711`) and returns the raw
    /// output, before the api layer turns an empty output into `-ERR no reply\n`.
    pub fn api(&self, arg: &str) -> String {
        // mod_db splits on '/' into at most 4 fields; the last keeps any further '/'.
        let argv: Vec<&str> = arg.splitn(4, '/').collect();
        let sub = argv.first().copied().unwrap_or("").trim();
        let err = "!err!".to_string();
        match sub.to_ascii_lowercase().as_str() {
            "insert" => {
                if argv.len() < 4 {
                    return err;
                }
                // mod_db keeps at most 255 bytes of a value.
                let mut v = argv[3].to_string();
                while v.len() > 255 {
                    v.pop();
                }
                self.seed(argv[1], argv[2], &v);
                "+OK".into()
            }
            "delete" => {
                if argv.len() < 3 {
                    return err;
                }
                self.delete(argv[1], argv[2]);
                "+OK".into()
            }
            "select" => {
                if argv.len() < 3 {
                    return err;
                }
                self.get(argv[1], argv[2]).unwrap_or_default()
            }
            "exists" => {
                if argv.len() < 3 {
                    return err;
                }
                if self.get(argv[1], argv[2]).is_some() {
                    "true"
                } else {
                    "false"
                }
                .into()
            }
            "count" => {
                let rows = self.lock();
                match argv.get(1).filter(|r| !r.is_empty()) {
                    Some(realm) => rows
                        .iter()
                        .filter(|(r, _, _)| r == realm)
                        .count()
                        .to_string(),
                    None => rows.len().to_string(),
                }
            }
            "list" => {
                let items: Vec<String> = match argv.get(1).filter(|r| !r.is_empty()) {
                    Some(realm) => self.keys(realm),
                    None => {
                        let mut realms: Vec<String> = Vec::new();
                        for (r, _, _) in self.lock().iter() {
                            if !realms.contains(r) {
                                realms.push(r.clone());
                            }
                        }
                        realms
                    }
                };
                let mut joined = String::new();
                for i in &items {
                    joined.push_str(i);
                    joined.push(',');
                }
                let mut bytes = joined.into_bytes();
                bytes.truncate(LIST_BUF - 1);
                bytes.pop();
                String::from_utf8_lossy(&bytes).to_string()
            }
            _ => err,
        }
    }
}
