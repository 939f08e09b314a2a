//! Where a lab cluster keeps its nodes' files: configs, data directories,
//! logs, and the server's certificate directory.

use std::path::PathBuf;

use super::LabCluster;

impl LabCluster {
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.toml"))
    }

    /// A file of the test's own, beside the nodes' files.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("data{i}"))
    }

    /// The server's `[proxy] cert_dir`: where services' `tls` files go.
    pub fn cert_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(super) fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    /// Node `i`'s log (the server's for 0).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }
}
