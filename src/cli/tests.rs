//! Properties of the CLI's argument parsers.

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, ..Default::default() })]

    /// Any duration text is read or refused with an example; a printed
    /// duration reads back as itself.
    #[test]
    fn durations_read_back_as_printed(
        text in "[ -~]{0,20}",
        secs in 0u64..10_000_000,
        millis in 0u32..1000,
    ) {
        if let Err(e) = super::parse_duration(&text) {
            proptest::prop_assert!(e.contains("like 30s"));
        }
        let d = std::time::Duration::new(secs, millis * 1_000_000);
        let printed = humantime::format_duration(d).to_string();
        proptest::prop_assert_eq!(super::parse_duration(&printed), Ok(d));
    }

    /// Any memory quantity is read or refused; one printed in bytes,
    /// or in Mi, reads back as its size.
    #[test]
    fn sizes_read_back_as_printed(text in "[ -~]{0,16}", bytes in 0u64..(1 << 50), mi in 0u64..(1 << 30)) {
        let _ = cri::MemoryLimit::parse(&text);
        proptest::prop_assert_eq!(cri::MemoryLimit::parse(&bytes.to_string()).map(|m| m.bytes()).ok(), Some(bytes));
        proptest::prop_assert_eq!(
            cri::MemoryLimit::parse(&format!("{mi}Mi")).map(|m| m.bytes()).ok(),
            Some(mi << 20)
        );
    }
}

/// Every `[[service]]` example in the README parses as a service.toml and
/// passes validation, so the reference stays true.
#[test]
fn the_readmes_service_examples_are_valid() {
    let readme = include_str!("../../README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains("[[service]]"))
        .collect();
    assert!(blocks.len() >= 2, "the README has service examples");
    for block in blocks {
        let specs =
            super::deploy::parse_file(std::path::Path::new("services/shop/service.toml"), block)
                .unwrap_or_else(|e| panic!("{e:#}\n{block}"));
        for spec in specs {
            spec.validate()
                .unwrap_or_else(|e| panic!("{}: {}", spec.name, e.message));
        }
    }
}
