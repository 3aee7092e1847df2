//! Object names for discovered things. Store names are DNS-1123 labels (1–63 of `[a-z0-9-]`,
//! alphanumeric at both ends); sources name things freely (`My_Func`, a 70-character
//! namespace-service-port triple), so every discovery service maps its names through
//! [`object_name`], which is stable (the same input always gives the same name) and keeps
//! distinct long inputs distinct with a hashed suffix.
use sha2::{Digest, Sha256};

pub const MAX_NAME: usize = 63;

/// `parts` joined with `-`, lower-cased, every other character turned into `-`, runs of `-`
/// collapsed. When the result is longer than 63 characters (or had to be changed in a way that
/// could make two inputs collide, such as upper case), it is cut and given an 8-character hash
/// of the original input, so `default-petstore-8080` stays as it is and a long name stays unique.
pub fn object_name(parts: &[&str]) -> String {
    let raw = parts.join("-");
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    let lossy = out != raw;
    if out.len() <= MAX_NAME && !out.is_empty() && !(lossy && has_upper(&raw)) {
        return out;
    }
    let hash = hex8(&raw);
    // Leave room for "-" + 8 hex characters.
    out.truncate(MAX_NAME - 9);
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        hash
    } else {
        format!("{out}-{hash}")
    }
}

fn has_upper(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_uppercase())
}

fn hex8(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(n: &str) -> bool {
        !n.is_empty()
            && n.len() <= MAX_NAME
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !n.starts_with('-')
            && !n.ends_with('-')
    }

    #[test]
    fn plain_names_are_kept() {
        assert_eq!(
            object_name(&["default", "petstore", "8080"]),
            "default-petstore-8080"
        );
    }

    #[test]
    fn invalid_characters_become_dashes() {
        assert_eq!(object_name(&["get_pet.v2"]), "get-pet-v2");
        assert_eq!(object_name(&["__x__"]), "x");
    }

    #[test]
    fn upper_case_gets_a_hash_so_case_variants_do_not_collide() {
        let a = object_name(&["GetPet"]);
        let b = object_name(&["getpet"]);
        assert_ne!(a, b);
        assert!(valid(&a), "{a}");
        assert!(a.starts_with("getpet-"), "{a}");
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let ns = "a-very-long-namespace-name-for-a-team";
        let a = object_name(&[ns, "a-service-with-a-long-name-too", "8080"]);
        let b = object_name(&[ns, "a-service-with-a-long-name-too", "8081"]);
        assert!(valid(&a) && valid(&b), "{a} {b}");
        assert_eq!(a.len(), MAX_NAME);
        assert_ne!(a, b);
        assert_eq!(
            a,
            object_name(&[ns, "a-service-with-a-long-name-too", "8080"])
        );
    }

    #[test]
    fn nothing_valid_still_gives_a_name() {
        let n = object_name(&["___"]);
        assert!(valid(&n), "{n}");
    }
}
