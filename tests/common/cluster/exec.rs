//! Interactive exec in the lab: the `orca` CLI inside node 0's namespace,
//! with stdin piped (`-i`), or on a terminal that `script` makes (`-it`).

use super::{LabCluster, ADMIN};

impl LabCluster {
    /// `orca` with the server's address and the admin token, for a shell
    /// line run inside node 0.
    fn orca_line(&self) -> String {
        format!(
            "{} --api http://127.0.0.1:6880 --token {ADMIN}",
            crate::common::orca_bin().display()
        )
    }

    /// `echo INPUT | orca exec -i SERVICE --instance ID -- sh -c SCRIPT`,
    /// then `code=<exit code>`: what it printed on stdout, and on stderr.
    pub fn exec_piped(
        &self,
        service: &str,
        id: &str,
        input: &str,
        script: &str,
    ) -> (String, String) {
        let line = format!(
            "echo {input} | {} exec -i {service} --instance {id} -- sh -c '{script}'; echo code=$?",
            self.orca_line()
        );
        let out = self.lab.nodes[0]
            .nsenter("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `orca exec -it SERVICE --instance ID -- sh -c SCRIPT` on a terminal
    /// of `cols` x `rows`, then `code=<exit code>`: what the terminal showed.
    pub fn exec_on_terminal(
        &self,
        cols: u16,
        rows: u16,
        service: &str,
        id: &str,
        script: &str,
    ) -> String {
        let line = format!(
            "stty cols {cols} rows {rows}; {} exec -it {service} --instance {id} -- sh -c '{script}'; echo code=$?",
            self.orca_line()
        );
        let out = self.lab.nodes[0]
            .nsenter("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
