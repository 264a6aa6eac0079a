//! The route policy: which scopes a method + path needs.
//!
//! A TOML file of rules, first match wins; a route no rule matches needs only a valid
//! token, as does every route when there is no policy at all.
//!
//! ```toml
//! [[route]]
//! method = "GET"                    # an HTTP method, or "*" for any
//! path = "/v1/conversations/**"     # `*` one segment, `**` the rest (zero or more)
//! scopes = ["conversations:read"]   # all of these are needed
//! ```

use serde::Deserialize;
use tollgate_engine::model::Scope;

/// Longest policy file accepted.
const MAX_RULES: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    route: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    method: String,
    path: String,
    scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

#[derive(Debug, Clone)]
struct Rule {
    method: Option<String>,
    segments: Vec<Segment>,
    scopes: Vec<String>,
}

/// The compiled policy.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    rules: Vec<Rule>,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl RoutePolicy {
    /// Parses a policy file's text; errors name the rule and the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| format!("the route policy is not valid TOML: {e}"))?;
        if file.route.len() > MAX_RULES {
            return Err(format!(
                "the route policy has {} rules; at most {MAX_RULES} are allowed",
                file.route.len()
            ));
        }
        let mut rules = Vec::with_capacity(file.route.len());
        for (i, rule) in file.route.into_iter().enumerate() {
            let n = i + 1;
            let method = match rule.method.trim() {
                "*" => None,
                m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
                m => return Err(format!("route {n}: `{m}` is not an HTTP method (or `*`)")),
            };
            if !rule.path.starts_with('/') {
                return Err(format!("route {n}: the path `{}` must start with `/`", rule.path));
            }
            let parsed: Vec<Segment> = segments(&rule.path)
                .map(|s| match s {
                    "**" => Segment::Rest,
                    "*" => Segment::One,
                    s if s.starts_with('{') && s.ends_with('}') => Segment::One,
                    s => Segment::Literal(s.to_owned()),
                })
                .collect();
            if parsed.iter().rev().skip(1).any(|s| *s == Segment::Rest) {
                return Err(format!("route {n}: `**` may only end a path"));
            }
            for scope in &rule.scopes {
                Scope::parse(scope).map_err(|e| format!("route {n}: {e}"))?;
            }
            rules.push(Rule {
                method,
                segments: parsed,
                scopes: rule.scopes,
            });
        }
        Ok(Self { rules })
    }

    /// Whether any rule exists.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The scopes `method path` needs (empty: none).
    pub fn required_scopes(&self, method: &str, path: &str) -> &[String] {
        for rule in &self.rules {
            if rule.method.as_deref().is_some_and(|m| !m.eq_ignore_ascii_case(method)) {
                continue;
            }
            if matches(&rule.segments, path) {
                return &rule.scopes;
            }
        }
        &[]
    }
}

fn matches(pattern: &[Segment], path: &str) -> bool {
    let mut parts = segments(path);
    for seg in pattern {
        match seg {
            Segment::Rest => return true,
            Segment::One => {
                if parts.next().is_none() {
                    return false;
                }
            }
            Segment::Literal(lit) => {
                if parts.next() != Some(lit.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: &str = r#"
        [[route]]
        method = "GET"
        path = "/v1/conversations/**"
        scopes = ["conversations:read"]

        [[route]]
        method = "post"
        path = "/v1/messages/{id}/send"
        scopes = ["messages:write"]

        [[route]]
        method = "*"
        path = "/admin/*"
        scopes = ["admin:all", "audit:read"]
    "#;

    #[test]
    fn first_matching_rule_gives_the_scopes() {
        let p = RoutePolicy::parse(POLICY).unwrap();
        assert_eq!(p.required_scopes("GET", "/v1/conversations"), ["conversations:read"]);
        assert_eq!(
            p.required_scopes("GET", "/v1/conversations/42/items"),
            ["conversations:read"]
        );
        assert!(p.required_scopes("DELETE", "/v1/conversations/42").is_empty());
        assert_eq!(p.required_scopes("POST", "/v1/messages/7/send"), ["messages:write"]);
        assert!(p.required_scopes("POST", "/v1/messages/7/send/now").is_empty());
        assert_eq!(p.required_scopes("PATCH", "/admin/x"), ["admin:all", "audit:read"]);
        assert!(p.required_scopes("GET", "/elsewhere").is_empty());
    }

    #[test]
    fn bad_policies_are_refused_with_the_rule_number() {
        let bad_scope = "[[route]]\nmethod='GET'\npath='/x'\nscopes=['Bad Scope']";
        assert!(RoutePolicy::parse(bad_scope).unwrap_err().starts_with("route 1:"));
        let bad_path = "[[route]]\nmethod='GET'\npath='x'\nscopes=[]";
        assert!(RoutePolicy::parse(bad_path).unwrap_err().contains("must start with"));
        let mid_rest = "[[route]]\nmethod='GET'\npath='/a/**/b'\nscopes=[]";
        assert!(RoutePolicy::parse(mid_rest).unwrap_err().contains("may only end"));
        let unknown = "[[route]]\nmethod='GET'\npath='/a'\nscopes=[]\nextra=1";
        assert!(RoutePolicy::parse(unknown).is_err());
    }

    proptest! {
        #[test]
        fn matching_never_panics(method in "[A-Z]{0,8}", path in "\\PC{0,64}") {
            let p = RoutePolicy::parse(POLICY).unwrap();
            let _ = p.required_scopes(&method, &path);
        }

        #[test]
        fn rest_pattern_matches_every_extension(tail in proptest::collection::vec("[a-z0-9]{1,8}", 0..6)) {
            let p = RoutePolicy::parse(POLICY).unwrap();
            let path = format!("/v1/conversations/{}", tail.join("/"));
            prop_assert_eq!(p.required_scopes("GET", &path), ["conversations:read"]);
        }
    }
}
