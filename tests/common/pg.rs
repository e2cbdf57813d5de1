//! Test databases beside the one a test run was given.

/// The URL of `base` up to its database, and the name of a test database beside that database:
/// `<base database>_<name>`, so that whoever made the base database (`.ci/run`) finds these by
/// name and drops them with it.
pub fn database_beside(base: &str, name: &str) -> (String, String) {
    let (prefix, rest) = base.rsplit_once('/').expect("URL with a database name");
    let base_db = rest.split('?').next().unwrap_or(rest);
    (prefix.to_string(), format!("{base_db}_{name}"))
}
