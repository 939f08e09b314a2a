//! Which image a replica starts from: the digest its version recorded at
//! deploy time, on every node and in every start (a scale-up, a restart in
//! a new slot, a revert, a rollback, a drain), never whatever the tag names
//! now. The decision is pure ([`source`]); [`pinned_image`] carries it out.

use cri::Cri;

use super::AgentError;

/// Where a replica's image comes from, given what the node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The image the reference names locally.
    Local(String),
    /// Pull this reference (a digest when pinned) from the registry.
    Pull(String),
    /// The pinned digest is not here and may not be pulled.
    Refused(String),
}

/// Decides where the image of a replica comes from: `pinned` whether the
/// node holds `image@digest`, `tag_digest` the digest the tag names on the
/// node (if it holds it), `never` the spec's `pull = "never"`.
pub(crate) fn source(
    image: &str,
    digest: Option<&str>,
    pinned: bool,
    tag_digest: Option<&str>,
    never: bool,
) -> Source {
    let Some(digest) = digest else {
        // A version from before digests were recorded: the tag, as then.
        return match (tag_digest, never) {
            (Some(_), _) => Source::Local(image.to_string()),
            (None, true) => Source::Refused(format!(
                "image {image} is not on this node and pull is \"never\""
            )),
            (None, false) => Source::Pull(image.to_string()),
        };
    };
    let reference = pinned_reference(image, digest);
    if pinned {
        Source::Local(reference)
    } else if tag_digest == Some(digest) {
        Source::Local(image.to_string())
    } else if never {
        Source::Refused(format!(
            "image {image}@{digest}, the digest this version was deployed with, is not on this node and pull is \"never\": \
             load it with `orca image import FILE.tar`"
        ))
    } else {
        Source::Pull(reference)
    }
}

/// `image` pinned to `digest` (the tag kept for people): what the registry
/// is asked for, and the name containerd keeps it under.
pub(crate) fn pinned_reference(image: &str, digest: &str) -> String {
    match cri::reference::ImageRef::parse(image) {
        Ok(r) => r.with_digest(digest).to_string(),
        Err(_) => format!("{image}@{digest}"),
    }
}

/// The image a replica of a version runs, pulled by digest when the node
/// lacks it (see [`source`]).
pub(crate) async fn pinned_image(
    cri: &Cri,
    image: &str,
    digest: Option<&str>,
    never: bool,
) -> Result<cri::Image, AgentError> {
    let lookup = |reference: String| async move {
        match cri.image(&reference).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(AgentError::from(e)),
        }
    };
    let pinned = match digest {
        Some(d) => lookup(pinned_reference(image, d)).await?,
        None => None,
    };
    if let Some(found) = pinned {
        return Ok(found);
    }
    let tagged = lookup(image.to_string()).await?;
    match source(
        image,
        digest,
        false,
        tagged.as_ref().map(|i| i.digest.as_str()),
        never,
    ) {
        Source::Local(_) => {
            tagged.ok_or_else(|| AgentError::Other(format!("image {image} vanished")))
        }
        Source::Pull(reference) => Ok(cri.pull(&reference).await?),
        Source::Refused(why) => Err(AgentError::Other(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn a_version_runs_its_recorded_digest() {
        let pinned = format!("docker.io/library/web:1@{D1}");
        // The tag moved to another image: the recorded digest is pulled.
        assert_eq!(
            source("web:1", Some(D1), false, Some(D2), false),
            Source::Pull(pinned.clone())
        );
        // The tag still names it, or the node holds the digest: local.
        assert_eq!(
            source("web:1", Some(D1), false, Some(D1), false),
            Source::Local("web:1".into())
        );
        assert_eq!(
            source("web:1", Some(D1), true, Some(D2), false),
            Source::Local(pinned)
        );
        // pull = "never" holds: nothing is pulled, the moved tag not run.
        assert!(matches!(
            source("web:1", Some(D1), false, Some(D2), true),
            Source::Refused(_)
        ));
        assert!(matches!(
            source("web:1", Some(D1), false, None, true),
            Source::Refused(_)
        ));
        // A version with no recorded digest runs the tag, as it did.
        assert_eq!(
            source("web:1", None, false, Some(D2), false),
            Source::Local("web:1".into())
        );
        assert_eq!(
            source("web:1", None, false, None, false),
            Source::Pull("web:1".into())
        );
    }
}
