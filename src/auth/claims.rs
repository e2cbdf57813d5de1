//! The token's claims: registered claims checked, the employee's identity extracted.
//!
//! Guarantees: `exp` is required and enforced, `nbf` enforced when present (both NumericDate,
//! RFC 7519 §4.1.4–4.1.5, with the configured leeway); `iat` (§4.1.6), when present, may not be
//! later than now + leeway, and the token's lifetime (`exp - iat`, or `exp - now` without `iat`)
//! may not exceed the configured maximum; `iss` must equal the configured issuer and
//! `aud` (a string or an array of strings, RFC 7519 §4.1.3) must contain the configured audience.
//! The subject, organisation and roles claims must be present and of the right type; the
//! department claim is optional, but a string when present.

use serde_json::{Map, Value};

use super::AuthError;
use super::cache::not_expired;
use crate::config::ClaimNames;
use crate::model::{Employee, truncate_for_message};

/// What the claims are checked against.
pub(crate) struct Expect<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) names: &'a ClaimNames,
    pub(crate) leeway: i64,
    /// Longest lifetime accepted, in seconds.
    pub(crate) max_lifetime: i64,
}

/// Checks the claims at time `now` (seconds since the epoch); returns the employee and `exp`.
pub(crate) fn check(
    claims: &Map<String, Value>,
    expect: &Expect<'_>,
    now: i64,
) -> Result<(Employee, i64), AuthError> {
    let exp = numeric_date(claims, "exp")?.ok_or(AuthError::MissingClaim("exp".into()))?;
    if !not_expired(exp, now, expect.leeway) {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now.saturating_add(expect.leeway) < nbf
    {
        return Err(AuthError::NotYetValid);
    }
    match numeric_date(claims, "iat")? {
        Some(iat) => {
            let ahead = iat.saturating_sub(now);
            if ahead > expect.leeway {
                return Err(AuthError::IssuedInFuture(ahead));
            }
            let lifetime = exp.saturating_sub(iat);
            if lifetime > expect.max_lifetime {
                return Err(AuthError::LifetimeTooLong {
                    lifetime,
                    max: expect.max_lifetime,
                });
            }
        }
        None => {
            let remaining = exp.saturating_sub(now);
            if remaining > expect.max_lifetime.saturating_add(expect.leeway) {
                return Err(AuthError::ExpiresTooLate {
                    remaining,
                    max: expect.max_lifetime,
                });
            }
        }
    }
    match claims.get("iss") {
        None => return Err(AuthError::MissingClaim("iss".into())),
        Some(Value::String(iss)) if iss == expect.issuer => {}
        Some(Value::String(iss)) => {
            return Err(AuthError::WrongIssuer(truncate_for_message(iss)));
        }
        Some(_) => return Err(invalid("iss", "a string")),
    }
    let aud_ok = match claims.get("aud") {
        None => return Err(AuthError::MissingClaim("aud".into())),
        Some(Value::String(a)) => a == expect.audience,
        Some(Value::Array(list)) => {
            let mut found = false;
            for a in list {
                match a {
                    Value::String(a) => found |= a == expect.audience,
                    _ => return Err(invalid("aud", "a string or an array of strings")),
                }
            }
            found
        }
        Some(_) => return Err(invalid("aud", "a string or an array of strings")),
    };
    if !aud_ok {
        return Err(AuthError::WrongAudience(expect.audience.to_string()));
    }
    let names = expect.names;
    let id = non_empty_string(claims, &names.subject)?;
    let org = non_empty_string(claims, &names.org)?;
    let roles = match lookup(claims, &names.roles) {
        None => return Err(AuthError::MissingClaim(names.roles.clone())),
        Some(Value::Array(list)) => {
            let mut roles = Vec::with_capacity(list.len());
            for r in list {
                match r {
                    Value::String(r) if !r.is_empty() => roles.push(r.clone()),
                    _ => return Err(invalid(&names.roles, "an array of non-empty strings")),
                }
            }
            roles
        }
        Some(_) => return Err(invalid(&names.roles, "an array of non-empty strings")),
    };
    // Optional: absent (or empty) means the token names no department; any other type is
    // refused like every malformed identity claim, so no record names a department by guess.
    let department = match lookup(claims, &names.department) {
        None => None,
        Some(Value::String(d)) if d.is_empty() => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(invalid(&names.department, "a string")),
    };
    Ok((
        Employee {
            id,
            org,
            roles,
            department,
        },
        exp,
    ))
}

fn invalid(name: &str, expected: &'static str) -> AuthError {
    AuthError::InvalidClaim {
        name: name.to_string(),
        expected,
    }
}

/// A claim by name; a name with dots that is not itself a claim is a path into nested objects
/// (`realm_access.roles`).
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    let mut parts = name.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, p| v.as_object()?.get(p))
}

fn non_empty_string(claims: &Map<String, Value>, name: &str) -> Result<String, AuthError> {
    match lookup(claims, name) {
        None => Err(AuthError::MissingClaim(name.to_string())),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(invalid(name, "a non-empty string")),
    }
}

/// A NumericDate claim (seconds since the epoch, fractions allowed and truncated).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    // `as` saturates; a NumericDate beyond i64 seconds is "forever".
                    Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
                    _ => Err(invalid(name, "a number of seconds")),
                }
            }
        }
        Some(_) => Err(invalid(name, "a number of seconds")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names() -> ClaimNames {
        ClaimNames::default()
    }

    fn run(claims: Value, names: &ClaimNames, now: i64) -> Result<(Employee, i64), AuthError> {
        let Value::Object(map) = claims else {
            panic!("test claims must be an object")
        };
        let expect = Expect {
            issuer: "https://idp.example",
            audience: "purpose-gate",
            names,
            leeway: 30,
            max_lifetime: 3600,
        };
        check(&map, &expect, now)
    }

    fn good() -> Value {
        json!({"iss": "https://idp.example", "aud": "purpose-gate", "exp": 1000,
               "sub": "e1", "org": "0363", "roles": ["burgerzaken"]})
    }

    #[test]
    fn good_claims_give_the_employee_and_exp() {
        let (e, exp) = run(good(), &names(), 900).unwrap();
        assert_eq!(exp, 1000);
        assert_eq!(e.id, "e1");
        assert_eq!(e.org, "0363");
        assert_eq!(e.roles, vec!["burgerzaken".to_string()]);
        assert_eq!(e.department, None, "no department claim: none recorded");
    }

    #[test]
    fn department_claim_is_optional_but_must_be_a_string() {
        let mut c = good();
        c["department"] = json!("Handhaving en Toezicht");
        let (e, _) = run(c.clone(), &names(), 900).unwrap();
        assert_eq!(e.department.as_deref(), Some("Handhaving en Toezicht"));
        c["department"] = json!("");
        assert_eq!(run(c.clone(), &names(), 900).unwrap().0.department, None);
        c["department"] = json!(["a", "b"]);
        match run(c, &names(), 900) {
            Err(AuthError::InvalidClaim { name, .. }) => assert_eq!(name, "department"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exp_and_nbf_use_the_leeway() {
        assert!(run(good(), &names(), 1029).is_ok());
        assert_eq!(run(good(), &names(), 1030), Err(AuthError::Expired));
        let mut c = good();
        c["nbf"] = json!(500);
        assert!(run(c.clone(), &names(), 470).is_ok());
        assert_eq!(run(c, &names(), 469), Err(AuthError::NotYetValid));
    }

    #[test]
    fn fractional_and_huge_numeric_dates_are_accepted() {
        let mut c = good();
        c["exp"] = json!(1000.9);
        assert_eq!(run(c.clone(), &names(), 0).unwrap().1, 1000);
        c["exp"] = json!(1e300);
        // A far-away `exp` saturates; only a lifetime within the maximum is accepted.
        c["iat"] = json!(i64::MAX - 1000);
        assert_eq!(run(c, &names(), i64::MAX - 1000).unwrap().1, i64::MAX);
    }

    #[test]
    fn wrongly_typed_registered_claims_are_named() {
        for (claim, v) in [
            ("exp", json!("1000")),
            ("nbf", json!(true)),
            ("iss", json!(["https://idp.example"])),
            ("aud", json!(7)),
            ("aud", json!(["purpose-gate", 7])),
        ] {
            let mut c = good();
            c[claim] = v;
            match run(c, &names(), 900) {
                Err(AuthError::InvalidClaim { name, .. }) => assert_eq!(name, claim),
                other => panic!("{claim}: {other:?}"),
            }
        }
    }

    #[test]
    fn audience_array_must_contain_ours() {
        let mut c = good();
        c["aud"] = json!(["other", "purpose-gate"]);
        assert!(run(c.clone(), &names(), 900).is_ok());
        c["aud"] = json!(["other"]);
        assert!(matches!(
            run(c, &names(), 900),
            Err(AuthError::WrongAudience(_))
        ));
    }

    #[test]
    fn missing_identity_claims_are_named() {
        for claim in ["exp", "iss", "aud", "sub", "org", "roles"] {
            let mut c = good();
            c.as_object_mut().unwrap().remove(claim);
            assert_eq!(
                run(c, &names(), 900),
                Err(AuthError::MissingClaim(claim.into())),
                "{claim}"
            );
        }
    }

    #[test]
    fn wrongly_typed_identity_claims_are_named() {
        for (claim, v) in [
            ("sub", json!(42)),
            ("sub", json!("")),
            ("org", json!(363)),
            ("roles", json!("burgerzaken")),
            ("roles", json!(["ok", 1])),
        ] {
            let mut c = good();
            c[claim] = v;
            match run(c, &names(), 900) {
                Err(AuthError::InvalidClaim { name, .. }) => assert_eq!(name, claim),
                other => panic!("{claim}: {other:?}"),
            }
        }
    }

    #[test]
    fn configured_claim_names_and_nested_paths_are_used() {
        let names = ClaimNames {
            subject: "employee_id".into(),
            roles: "realm_access.roles".into(),
            org: "https://gemeente.example/org".into(),
            department: "afdeling.naam".into(),
        };
        let c = json!({"iss": "https://idp.example", "aud": "purpose-gate", "exp": 1000,
            "employee_id": "e9", "https://gemeente.example/org": "0599",
            "realm_access": {"roles": ["bijzondere-zaken"]}, "afdeling": {"naam": "Burgerzaken"}});
        let (e, _) = run(c, &names, 900).unwrap();
        assert_eq!(e.id, "e9");
        assert_eq!(e.org, "0599");
        assert_eq!(e.roles, vec!["bijzondere-zaken".to_string()]);
        assert_eq!(e.department.as_deref(), Some("Burgerzaken"));
    }
}
