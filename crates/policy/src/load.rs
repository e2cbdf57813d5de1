//! Loading: reads the schema, the policy files and the static entities from one directory,
//! validates them strictly and reports every problem as `file:line:column: message`.
//!
//! Guarantees: a loaded set parses, passes Cedar's strict validation without warnings (as the
//! `cedar` CLI's `run-tests` demands), every policy has a unique `@id`, every forbid has a
//! `@code` (camelCase) and a one-line `@reason`, and the static entities conform to the schema.
//! Refuses: anything else, with the first position Cedar or the JSON parser can name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Effect, Entities, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::PolicyLoadError;

/// File name of the static entities next to the policies.
pub const ENTITIES_FILE: &str = "entities.json";

/// Entity types that `entities.json` may hold; the others are built per request.
const STATIC_TYPES: [&str; 4] = ["Organization", "Role", "CaseType", "Person"];

/// One file as read from disk.
#[derive(Debug, Clone)]
pub(super) struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// What one shipped policy is, where it is written and what it says on a deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The `@id`, also the Cedar policy id.
    pub id: String,
    /// `true` for `permit`, `false` for `forbid`.
    pub permit: bool,
    /// `@code` (forbids only).
    pub code: Option<String>,
    /// `@reason` (forbids only).
    pub reason: Option<String>,
    /// File the policy is written in.
    pub file: PathBuf,
    /// 1-based line of the policy's first token (its first annotation).
    pub line: usize,
    /// 1-based column of the policy's first token.
    pub column: usize,
}

/// The validated contents of a policy directory.
pub(super) struct Loaded {
    pub schema: Schema,
    pub policies: PolicySet,
    /// Policies in load order (files sorted by name, then source order).
    pub infos: Vec<PolicyInfo>,
    pub entities: Entities,
    pub schema_file: PathBuf,
    pub policy_files: Vec<PathBuf>,
    pub entities_file: PathBuf,
    pub version: String,
}

/// Reads and validates everything in `dir`.
pub(super) fn load_dir(dir: &Path) -> Result<Loaded, PolicyLoadError> {
    let (schema_src, policy_srcs, entities_src) = read_dir(dir)?;

    let schema = parse_schema(&schema_src)?;

    let mut policies = PolicySet::new();
    let mut infos: Vec<PolicyInfo> = Vec::new();
    let mut origin: HashMap<String, usize> = HashMap::new();
    for (file_index, src) in policy_srcs.iter().enumerate() {
        for (policy, info) in parse_policy_file(src)? {
            if let Some(first) = infos.iter().find(|i| i.id == info.id) {
                return Err(at(
                    &src.path,
                    info.line,
                    info.column,
                    &format!(
                        "duplicate policy id `{}` (first used at {}:{}:{})",
                        info.id,
                        first.file.display(),
                        first.line,
                        first.column
                    ),
                ));
            }
            policies
                .add(policy)
                .map_err(|e| at(&src.path, info.line, info.column, &one_line(&e.to_string())))?;
            origin.insert(info.id.clone(), file_index);
            infos.push(info);
        }
    }
    if infos.is_empty() {
        return Err(PolicyLoadError(format!(
            "no policies found in {}",
            display_list(policy_srcs.iter().map(|s| &s.path))
        )));
    }

    validate(&schema, &policies, &policy_srcs, &origin)?;

    let entities = parse_entities(&entities_src, &schema)?;

    let mut all: Vec<&SourceFile> = Vec::with_capacity(policy_srcs.len() + 2);
    all.push(&schema_src);
    all.extend(policy_srcs.iter());
    all.push(&entities_src);
    let version = version_of(&all);

    Ok(Loaded {
        schema,
        policies,
        infos,
        entities,
        schema_file: schema_src.path.clone(),
        policy_files: policy_srcs.iter().map(|s| s.path.clone()).collect(),
        entities_file: entities_src.path.clone(),
        version,
    })
}

/// Lists and reads the schema, the policy files (sorted by name) and `entities.json`.
fn read_dir(dir: &Path) -> Result<(SourceFile, Vec<SourceFile>, SourceFile), PolicyLoadError> {
    let listing = std::fs::read_dir(dir).map_err(|e| {
        PolicyLoadError(format!(
            "cannot read policy directory `{}`: {e}",
            dir.display()
        ))
    })?;
    let mut schemas = Vec::new();
    let mut cedars = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| {
            PolicyLoadError(format!(
                "cannot read policy directory `{}`: {e}",
                dir.display()
            ))
        })?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("cedarschema") => schemas.push(path),
            Some("cedar") => cedars.push(path),
            _ => {}
        }
    }
    schemas.sort();
    cedars.sort();
    let schema_path = match schemas.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(PolicyLoadError(format!(
                "no `*.cedarschema` file in `{}`",
                dir.display()
            )));
        }
        many => {
            return Err(PolicyLoadError(format!(
                "expected one `*.cedarschema` file in `{}`, found {}",
                dir.display(),
                display_list(many.iter())
            )));
        }
    };
    if cedars.is_empty() {
        return Err(PolicyLoadError(format!(
            "no `*.cedar` policy file in `{}`",
            dir.display()
        )));
    }
    let schema = read_file(&schema_path)?;
    let policies = cedars
        .iter()
        .map(|p| read_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let entities = read_file(&dir.join(ENTITIES_FILE))?;
    Ok((schema, policies, entities))
}

pub(super) fn read_file(path: &Path) -> Result<SourceFile, PolicyLoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyLoadError(format!("cannot read `{}`: {e}", path.display())))?;
    Ok(SourceFile {
        path: path.to_path_buf(),
        text,
    })
}

fn parse_schema(src: &SourceFile) -> Result<Schema, PolicyLoadError> {
    match Schema::from_cedarschema_str(&src.text) {
        Ok((schema, warnings)) => {
            // Schema warnings (e.g. a type shadowing a built-in) are treated as errors: the
            // shipped schema is small and should be unambiguous.
            if let Some(w) = warnings.into_iter().next() {
                return Err(diag_error(src, &w));
            }
            Ok(schema)
        }
        Err(e) => Err(diag_error(src, &e)),
    }
}

/// Parses one policy file, checks the annotations and renames each policy to its `@id`
/// (as the `cedar` CLI does), in source order.
fn parse_policy_file(src: &SourceFile) -> Result<Vec<(Policy, PolicyInfo)>, PolicyLoadError> {
    let set = PolicySet::from_str(&src.text).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(|e| diag_message(src, e)).collect();
        PolicyLoadError(msgs.join("; "))
    })?;
    if set.templates().next().is_some() {
        return Err(PolicyLoadError(format!(
            "{}: templates are not supported, write static policies",
            src.path.display()
        )));
    }
    // The parser names policies `policy0`, `policy1`, … in source order.
    let mut parsed: Vec<(usize, &Policy)> = set
        .policies()
        .map(|p| {
            let n = p
                .id()
                .to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            (n, p)
        })
        .collect();
    parsed.sort_by_key(|(n, _)| *n);

    let mut out = Vec::with_capacity(parsed.len());
    let mut cursor = 0;
    for (_, policy) in parsed {
        let text = policy.to_string();
        let offset = match src.text.get(cursor..).and_then(|rest| rest.find(&text)) {
            Some(rel) => cursor + rel,
            None => cursor,
        };
        cursor = offset + text.len().min(src.text.len() - offset);
        let (line, column) = line_col(&src.text, offset);
        let here = |msg: &str| at(&src.path, line, column, msg);

        let Some(id) = policy.annotation("id") else {
            return Err(here("policy has no `@id(\"…\")` annotation"));
        };
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(here(&format!(
                "policy id `{id}` must be non-empty and without spaces"
            )));
        }
        let permit = policy.effect() == Effect::Permit;
        let (code, reason) = if permit {
            (None, None)
        } else {
            let Some(code) = policy.annotation("code") else {
                return Err(here(&format!(
                    "forbid `{id}` has no `@code(\"…\")` annotation"
                )));
            };
            if !is_camel_case(code) {
                return Err(here(&format!(
                    "forbid `{id}` has code `{code}`, expected camelCase such as `caseClosed`"
                )));
            }
            let Some(reason) = policy.annotation("reason") else {
                return Err(here(&format!(
                    "forbid `{id}` has no `@reason(\"…\")` annotation"
                )));
            };
            if reason.trim().is_empty() || reason.contains(['\n', '\r']) {
                return Err(here(&format!(
                    "forbid `{id}` needs a non-empty one-line `@reason`"
                )));
            }
            (Some(code.to_string()), Some(reason.to_string()))
        };
        let renamed = policy.new_id(PolicyId::new(id));
        out.push((
            renamed,
            PolicyInfo {
                id: id.to_string(),
                permit,
                code,
                reason,
                file: src.path.clone(),
                line,
                column,
            },
        ));
    }
    Ok(out)
}

/// Strict validation; warnings fail too, as they do in `cedar run-tests`.
fn validate(
    schema: &Schema,
    policies: &PolicySet,
    srcs: &[SourceFile],
    origin: &HashMap<String, usize>,
) -> Result<(), PolicyLoadError> {
    let validator = Validator::new(schema.clone());
    let result = validator.validate(policies, ValidationMode::Strict);
    let mut msgs: Vec<String> = Vec::new();
    let src_of = |id: &PolicyId| {
        origin
            .get(AsRef::<str>::as_ref(id))
            .and_then(|i| srcs.get(*i))
    };
    for e in result.validation_errors() {
        msgs.push(match src_of(e.policy_id()) {
            Some(src) => diag_message(src, e),
            None => one_line(&e.to_string()),
        });
    }
    for w in result.validation_warnings() {
        msgs.push(match src_of(w.policy_id()) {
            Some(src) => format!("{} (warning)", diag_message(src, w)),
            None => format!("{} (warning)", one_line(&w.to_string())),
        });
    }
    // The validator reports a problem once per action it applies to; keep one per position.
    let mut positions = std::collections::HashSet::new();
    msgs.retain(|m| positions.insert(m.split(": ").next().unwrap_or(m).to_string()));
    if msgs.is_empty() {
        Ok(())
    } else {
        Err(PolicyLoadError(msgs.join("; ")))
    }
}

/// Parses `entities.json` against the schema; an entity that does not conform is reported at
/// the position of its JSON object.
pub(super) fn parse_entities(
    src: &SourceFile,
    schema: &Schema,
) -> Result<Entities, PolicyLoadError> {
    let items: Vec<&RawValue> = serde_json::from_str(&src.text).map_err(|e| {
        at(
            &src.path,
            e.line(),
            e.column(),
            &format!("expected a JSON array of Cedar entities: {}", json_msg(&e)),
        )
    })?;
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    for item in &items {
        let offset = (item.get().as_ptr() as usize).saturating_sub(src.text.as_ptr() as usize);
        let (line, column) = line_col(&src.text, offset);
        let one = format!("[{}]", item.get());
        let parsed = Entities::from_json_str(&one, Some(schema))
            .map_err(|e| at(&src.path, line, column, &error_chain(&e)))?;
        for entity in parsed.iter() {
            let uid = entity.uid();
            if uid.type_name().basename() == "Action" {
                continue;
            }
            let key = uid.to_string();
            if !STATIC_TYPES.contains(&uid.type_name().basename()) {
                return Err(at(
                    &src.path,
                    line,
                    column,
                    &format!(
                        "entity `{key}` is built by the gate per request; static entities are of type {}",
                        STATIC_TYPES.join(", ")
                    ),
                ));
            }
            if let Some((l, c)) = seen.get(&key) {
                return Err(at(
                    &src.path,
                    line,
                    column,
                    &format!("duplicate entity `{key}` (first at line {l}, column {c})"),
                ));
            }
            seen.insert(key, (line, column));
        }
    }
    // Each entity conforms on its own; the whole file adds the hierarchy checks.
    Entities::from_json_str(&src.text, Some(schema))
        .map_err(|e| PolicyLoadError(format!("{}: {}", src.path.display(), error_chain(&e))))
}

/// SHA-256 over the files, sorted by file name: for each, the name, a NUL byte, the length as
/// 8 big-endian bytes, then the bytes.
fn version_of(files: &[&SourceFile]) -> String {
    let mut sorted: Vec<&&SourceFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    let mut h = Sha256::new();
    for f in sorted {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update((f.text.len() as u64).to_be_bytes());
        h.update(f.text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// `file:line:column: message`.
pub(super) fn at(path: &Path, line: usize, column: usize, msg: &str) -> PolicyLoadError {
    PolicyLoadError(format!("{}:{line}:{column}: {msg}", path.display()))
}

/// A Cedar diagnostic as `file:line:column: message (help)`, positioned at its first label.
fn diag_message(src: &SourceFile, d: &dyn Diagnostic) -> String {
    let mut msg = one_line(&d.to_string());
    if let Some(help) = d.help() {
        msg.push_str(&format!(" ({})", one_line(&help.to_string())));
    }
    match first_offset(d) {
        Some(offset) => {
            let (line, column) = line_col(&src.text, offset);
            format!("{}:{line}:{column}: {msg}", src.path.display())
        }
        None => format!("{}: {msg}", src.path.display()),
    }
}

fn diag_error(src: &SourceFile, d: &dyn Diagnostic) -> PolicyLoadError {
    PolicyLoadError(diag_message(src, d))
}

fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    if let Some(mut labels) = d.labels()
        && let Some(label) = labels.next()
    {
        return Some(label.offset());
    }
    if let Some(related) = d.related() {
        for r in related {
            if let Some(o) = first_offset(r) {
                return Some(o);
            }
        }
    }
    None
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = one_line(&e.to_string());
    let mut source = e.source();
    while let Some(s) = source {
        let next = one_line(&s.to_string());
        if !msg.contains(&next) {
            msg.push_str(": ");
            msg.push_str(&next);
        }
        source = s.source();
    }
    msg
}

/// Collapses a multi-line message onto one line.
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// serde_json's message without its own " at line X column Y" suffix.
pub(super) fn json_msg(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s.get(..i).unwrap_or(&s).to_string(),
        None => s,
    }
}

fn is_camel_case(code: &str) -> bool {
    let mut chars = code.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

fn display_list<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> String {
    paths
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}
