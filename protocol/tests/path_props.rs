//! Property tests of the path rules in `protocol/src/path.rs`: whatever string or file-system
//! path arrives, an accepted [`SitePath`] obeys every documented rule, stays under the root
//! when joined to it, and `starts_with`, `parent` and `rebase` agree with each other.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::path::{Component, Path};
use tamizdat_protocol::path::{MAX_COMPONENT_LEN, MAX_DEPTH, MAX_PATH_LEN};
use tamizdat_protocol::{PathError, SitePath, RESERVED_PREFIX};

const ROOT: &str = "/srv/site";

/// One valid component: letters (some non-ASCII), digits, space, `_ . -`; never `.` or `..`.
fn component() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9üß _.-]{1,12}".prop_filter("not . or ..", |c| c != "." && c != "..")
}

/// A valid path of 1 to 6 components.
fn site_path() -> impl Strategy<Value = SitePath> {
    prop::collection::vec(component(), 1..=6)
        .prop_filter_map("valid", |parts| SitePath::new(parts.join("/")).ok())
}

/// Strings built from the pieces hostile paths are made of, plus ordinary ones.
fn pathish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("/".to_string()),
        Just("//".to_string()),
        Just("\0".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        Just("\u{7f}".to_string()),
        Just("\u{85}".to_string()),
        Just(RESERVED_PREFIX.to_string()),
        component(),
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|p| p.concat())
}

/// Every rule of the module docs, checked directly on the string.
fn obeys_the_rules(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && s.len() <= MAX_PATH_LEN
        && parts.len() <= MAX_DEPTH
        && !s.starts_with('/')
        && !s.starts_with(RESERVED_PREFIX)
        && !s.chars().any(|c| c == '\0' || c == '\\' || c.is_control())
        && parts
            .iter()
            .all(|c| !c.is_empty() && *c != "." && *c != ".." && c.len() <= MAX_COMPONENT_LEN)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        // Failing cases are kept in tests/path_props.proptest-regressions and replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn accepted_exactly_when_the_documented_rules_hold(s in pathish()) {
        let accepted = SitePath::new(s.as_str());
        prop_assert_eq!(accepted.is_ok(), obeys_the_rules(&s), "{:?}: {:?}", s, accepted);
        if let Ok(p) = accepted {
            prop_assert_eq!(p.as_str(), s.as_str());
            prop_assert_eq!(SitePath::new(p.as_str()), Ok(p.clone()));
            prop_assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn arbitrary_strings_are_judged_by_the_rules(s in any::<String>()) {
        prop_assert_eq!(SitePath::new(s.as_str()).is_ok(), obeys_the_rules(&s));
    }

    #[test]
    fn joined_under_a_root_it_stays_there_and_comes_back(p in site_path()) {
        let root = Path::new(ROOT);
        let full = p.to_fs(root);
        prop_assert!(full.starts_with(root) && full != root);
        let below: Vec<Component> = full.strip_prefix(root).unwrap().components().collect();
        prop_assert!(below.iter().all(|c| matches!(c, Component::Normal(_))), "{:?}", full);
        prop_assert_eq!(below.len(), p.components().count());
        prop_assert_eq!(SitePath::from_fs(root, &full), Ok(p));
    }

    #[test]
    fn one_hostile_piece_anywhere_is_refused(
        p in site_path(),
        at in any::<prop::sample::Index>(),
        bad in prop_oneof![
            Just(("..", PathError::DotComponent)),
            Just((".", PathError::DotComponent)),
            Just(("", PathError::EmptyComponent)),
            Just(("a\0b", PathError::Nul)),
            Just(("a\\b", PathError::Backslash)),
            Just(("a\rb", PathError::Control)),
        ],
    ) {
        let mut parts: Vec<&str> = p.components().collect();
        let i = at.index(parts.len() + 1);
        parts.insert(i, bad.0);
        let s = parts.join("/");
        let want = if i == 0 && bad.0.is_empty() { PathError::Absolute } else { bad.1 };
        prop_assert_eq!(SitePath::new(s.as_str()), Err(want), "{:?}", s);
        // An absolute or reserved form of a valid path is refused too.
        prop_assert_eq!(SitePath::new(format!("/{p}")), Err(PathError::Absolute));
        prop_assert_eq!(
            SitePath::new(format!("{RESERVED_PREFIX}/{p}")),
            Err(PathError::Reserved)
        );
    }

    #[test]
    fn from_fs_refuses_what_is_not_under_the_root(
        p in site_path(),
        outside in prop_oneof![Just("/etc"), Just("/srv"), Just("/srv/site2"), Just("/")],
    ) {
        let root = Path::new(ROOT);
        prop_assert!(SitePath::from_fs(root, &p.to_fs(Path::new(outside))).is_err());
        let dotted = root.join("a/../..").join(p.as_str());
        prop_assert!(SitePath::from_fs(root, &dotted).is_err(), "{:?}", dotted);
    }

    #[test]
    fn starts_with_is_a_prefix_of_components(p in site_path(), d in site_path()) {
        let pc: Vec<&str> = p.components().collect();
        let dc: Vec<&str> = d.components().collect();
        prop_assert_eq!(p.starts_with(&d), pc.starts_with(&dc));
        prop_assert!(p.starts_with(&p));
    }

    #[test]
    fn parent_is_the_path_without_its_last_component(p in site_path()) {
        let pc: Vec<&str> = p.components().collect();
        match p.parent() {
            None => prop_assert_eq!(pc.len(), 1),
            Some(parent) => {
                prop_assert_eq!(SitePath::new(parent.as_str()), Ok(parent.clone()));
                prop_assert!(p.starts_with(&parent) && p != parent);
                prop_assert_eq!(parent.components().collect::<Vec<_>>(), &pc[..pc.len() - 1]);
            }
        }
    }

    #[test]
    fn rebase_agrees_with_starts_with_and_undoes_itself(
        p in site_path(),
        from in site_path(),
        to in site_path(),
        // Half the time, `from` is one of p's own ancestors.
        use_ancestor in any::<bool>(),
        depth in any::<prop::sample::Index>(),
    ) {
        let from = if use_ancestor {
            let pc: Vec<&str> = p.components().collect();
            SitePath::new(pc[..=depth.index(pc.len())].join("/")).unwrap()
        } else {
            from
        };
        match p.rebase(&from, &to) {
            Some(moved) => {
                prop_assert!(p.starts_with(&from));
                prop_assert!(moved.starts_with(&to));
                prop_assert_eq!(SitePath::new(moved.as_str()), Ok(moved.clone()));
                prop_assert_eq!(moved.rebase(&to, &from), Some(p.clone()));
                let tail = &p.as_str()[from.as_str().len()..];
                prop_assert_eq!(moved.as_str(), format!("{to}{tail}"));
            }
            None => {
                // Refused only when `from` is not a prefix, or the result would break a limit.
                let would_be = format!("{to}{}", p.as_str().get(from.as_str().len()..).unwrap_or(""));
                prop_assert!(
                    !p.starts_with(&from) || SitePath::new(would_be).is_err(),
                    "{:?} under {:?} -> {:?}", p, from, to
                );
            }
        }
    }
}
