//! Tag patterns for subscriptions and queries: `line1.*`, `*.temperature`,
//! `line?.motor*`. `*` matches any run of characters (dots included), `?` exactly
//! one. The common shapes (everything, exact name, prefix, suffix) are matched
//! without the general backtracking loop because subscribers test every frame.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why [`TagPattern::new`] refused a pattern; the message is shown to whoever
/// wrote it (a subscriber's filter, an API query).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern was `""`; use `*` to match every tag.
    #[error("tag pattern is empty")]
    Empty,
    /// The pattern was longer than 256 bytes (the field holds its length); no
    /// tag is longer than that either.
    #[error("tag pattern is {0} bytes long, the limit is 256")]
    TooLong(usize),
    /// The pattern had a character no tag can contain.
    #[error("tag pattern {pattern:?} contains {ch:?}, which no tag name can contain")]
    BadChar {
        /// The whole pattern as given.
        pattern: String,
        /// The first character that is neither allowed in a tag name nor `*`/`?`.
        ch: char,
    },
}

#[derive(Clone, PartialEq, Eq)]
enum Shape {
    All,
    Exact,
    Prefix(usize),
    Suffix(usize),
    Glob,
}

/// A tag pattern checked and sorted into its cheapest matching shape once, so
/// that [`TagPattern::matches`] is cheap enough to run on every frame.
#[derive(Clone, PartialEq, Eq)]
pub struct TagPattern {
    text: Box<str>,
    shape: Shape,
}

impl TagPattern {
    /// Check `text` and pick how to match it; refuses empty patterns, patterns
    /// over 256 bytes and characters no tag name can contain.
    pub fn new(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > 256 {
            return Err(PatternError::TooLong(text.len()));
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '#' | '*' | '?');
        if let Some(ch) = text.chars().find(|&c| !ok(c)) {
            return Err(PatternError::BadChar { pattern: text.to_owned(), ch });
        }
        let stars = text.matches('*').count();
        let shape = if text.contains('?') {
            Shape::Glob
        } else if text.chars().all(|c| c == '*') {
            Shape::All
        } else if stars == 0 {
            Shape::Exact
        } else if stars == 1 && text.ends_with('*') {
            Shape::Prefix(text.len() - 1)
        } else if stars == 1 && text.starts_with('*') {
            Shape::Suffix(1)
        } else {
            Shape::Glob
        };
        Ok(TagPattern { text: text.into(), shape })
    }

    /// `*`: matches every tag without looking at it.
    pub fn all() -> Self {
        TagPattern { text: "*".into(), shape: Shape::All }
    }

    /// The text the pattern was compiled from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `tag` matches.
    pub fn matches(&self, tag: &str) -> bool {
        match self.shape {
            Shape::All => true,
            Shape::Exact => tag == &*self.text,
            Shape::Prefix(n) => tag.as_bytes().starts_with(&self.text.as_bytes()[..n]),
            Shape::Suffix(n) => tag.as_bytes().ends_with(&self.text.as_bytes()[n..]),
            Shape::Glob => glob(self.text.as_bytes(), tag.as_bytes()),
        }
    }
}

/// Iterative glob with single-star backtracking: linear in practice, and never
/// worse than O(pattern * text), so a hostile pattern cannot stall a subscriber.
fn glob(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

impl fmt::Debug for TagPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for TagPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for TagPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TagPattern::new(s)
    }
}

impl Serialize for TagPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TagPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TagPattern::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        TagPattern::new(p).unwrap().matches(t)
    }

    #[test]
    fn common_shapes_match_as_expected() {
        assert!(m("*", "a.b"));
        assert!(m("line1.*", "line1.temp"));
        assert!(!m("line1.*", "line10.temp"));
        assert!(m("line1*", "line10.temp"));
        assert!(m("*.temp", "line1.temp"));
        assert!(!m("*.temp", "line1.temperature"));
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.bc"));
    }

    #[test]
    fn general_globs_backtrack_correctly() {
        assert!(m("line?.m*r.*", "line2.motor.speed"));
        assert!(!m("line?.m*r.*", "line22.motor.speed"));
        assert!(m("*a*b*c", "xxaybzzc"));
        assert!(!m("*a*b*c", "xxaybzzcx"));
        assert!(m("a**b", "ab"));
        assert!(m("*.*.*", "a.b.c"));
        assert!(!m("*.*.*", "a.b"));
    }

    #[test]
    fn glob_agrees_with_a_naive_recursive_matcher() {
        fn naive(p: &[u8], t: &[u8]) -> bool {
            match (p.first(), t.first()) {
                (None, None) => true,
                (Some(b'*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
                (Some(b'?'), Some(_)) => naive(&p[1..], &t[1..]),
                (Some(a), Some(b)) if a == b => naive(&p[1..], &t[1..]),
                _ => false,
            }
        }
        let alphabet = [b'a', b'b', b'*', b'?'];
        let texts: Vec<Vec<u8>> = (0..64u32)
            .flat_map(|n| {
                (1..=5).map(move |len| (0..len).map(|i| if (n >> i) & 1 == 1 { b'a' } else { b'b' }).collect())
            })
            .collect();
        for n in 0..4u32.pow(5) {
            let p: Vec<u8> = (0..5).map(|i| alphabet[((n / 4u32.pow(i)) % 4) as usize]).collect();
            for t in &texts {
                let (ps, ts) = (std::str::from_utf8(&p).unwrap(), std::str::from_utf8(t).unwrap());
                let expect = naive(&p, t);
                assert_eq!(glob(&p, t), expect, "{ps:?} {ts:?}");
                assert_eq!(TagPattern::new(ps).unwrap().matches(ts), expect, "compiled {ps:?} {ts:?}");
            }
        }
    }

    #[test]
    fn refuses_characters_no_tag_has() {
        assert!(matches!(TagPattern::new("line 1.*"), Err(PatternError::BadChar { ch: ' ', .. })));
        assert_eq!(TagPattern::new(""), Err(PatternError::Empty));
    }
}
