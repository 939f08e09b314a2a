//! The process's argv from the image and the overrides (`command`,
//! `entrypoint`, `args`), as Docker composes them.

use crate::error::{CriError, Result};
use crate::image::ImageConfig;

/// The process arguments: `command` whole, else the Entrypoint (the
/// `entrypoint` override or the image's) followed by the `args` override,
/// else by the image's Cmd unless `entrypoint` replaced the Entrypoint.
pub fn process_args(
    image: &ImageConfig,
    command: Option<&[String]>,
    entrypoint: Option<&[String]>,
    args: Option<&[String]>,
) -> Result<Vec<String>> {
    let args: Vec<String> = match (command, entrypoint) {
        (Some(c), _) => c.to_vec(),
        (None, Some(e)) => e.iter().chain(args.unwrap_or_default()).cloned().collect(),
        (None, None) => image
            .entrypoint
            .iter()
            .flatten()
            .chain(args.map_or_else(
                || image.cmd.iter().flatten().collect::<Vec<_>>(),
                |a| a.iter().collect(),
            ))
            .cloned()
            .collect(),
    };
    if args.is_empty() || args[0].is_empty() {
        return Err(CriError::InvalidConfig {
            field: "command",
            reason: "the image has no Entrypoint or Cmd; set a command".into(),
        });
    }
    Ok(args)
}
