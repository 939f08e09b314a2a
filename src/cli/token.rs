//! The token the CLI sends, and what a refusal for want of one says.

/// The token the CLI sends: `--token`, then `ORCA_TOKEN` (both through
/// clap), then the first start's admin token file when readable.
pub fn resolve(given: Option<String>) -> (Option<String>, Option<std::path::PathBuf>) {
    if given.is_some() {
        return (given, None);
    }
    let path = crate::admin_token::cli_path(std::env::var("ORCA_DATA_DIR").ok().as_deref());
    (crate::admin_token::read(&path), Some(path))
}

/// A 401 without any token says where one comes from.
pub fn explain_unauthorized(
    e: anyhow::Error,
    looked_in: Option<&std::path::Path>,
) -> anyhow::Error {
    let unauthorized = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<api::client::ClientError>(),
            Some(api::client::ClientError::Api { status: 401, .. })
        )
    });
    match looked_in {
        Some(path) if unauthorized => e.context(format!(
            "no token: pass --token or set ORCA_TOKEN (on the server's host, as root, the CLI reads {} when it exists)",
            path.display()
        )),
        _ => e,
    }
}
