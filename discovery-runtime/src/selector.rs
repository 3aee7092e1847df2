//! Kubernetes-style equality label selectors: `app=petstore,tier!=db,team,!legacy`.
use std::{collections::HashMap, str::FromStr};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key(k)?, v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(key(k)?, v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(key(k)?)
            } else {
                Requirement::Exists(key(part)?)
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        return Err(format!("{k:?} is not a label key"));
    }
    Ok(k.into())
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selects_by_equality_and_existence() {
        let s: Selector = "app=petstore, tier!=db, team, !legacy".parse().unwrap();
        assert!(s.matches(&labels(&[("app", "petstore"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("app", "petstore")])));
        assert!(!s.matches(&labels(&[
            ("app", "petstore"),
            ("team", "a"),
            ("tier", "db")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "petstore"),
            ("team", "a"),
            ("legacy", "")
        ])));
        assert!(Selector::default().matches(&labels(&[])));
        assert!("=x".parse::<Selector>().is_err());
    }
}
