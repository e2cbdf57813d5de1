//! Surnames for the shared-surname signal: Dutch surname normalisation and the two name files
//! an auditor hands to `audit signals` (the employee directory and the subjects' surnames).
//!
//! The audit log holds no names of persons, and the gate records none (not even hashed: a
//! surname has so little entropy that a hash of it is the name to anyone with a list of
//! surnames, and the registry's answer often holds no name at all, because the employee asked
//! only for `verblijfplaats`). The signal therefore takes the subjects' surnames from a file the
//! auditor exports from the BRP for the persons in question (`docs/auditing.md`).
//!
//! Normalisation ([`surname_keys`]): Unicode compatibility decomposition with the combining
//! marks dropped (`Müller` = `Muller`, `Çelik` = `Celik`), lowercase, apostrophes and dots
//! removed, the leading voorvoegsels of the RvIG voorvoegsel table dropped (`van der Berg`,
//! `Van den Berg` and `Berg` are all `berg`; `'t Hart` is `hart`), and a double name split at
//! its hyphen into both parts (`Jansen-van Dijk` gives `jansen` and `dijk`). Two names share a
//! surname when their key sets intersect.
//!
//! Refuses: a file that is neither a JSON object of strings nor CSV with the expected header
//! columns, an empty id, a duplicate id with another name.

use std::collections::BTreeMap;
use std::path::Path;

pub use purpose_gate_model::names::surname_keys;

/// Whether two surnames share a key; the shared key, if any.
pub fn shared_surname(a: &str, b: &str) -> Option<String> {
    let ka = surname_keys(a);
    surname_keys(b).into_iter().find(|k| ka.contains(k))
}

/// An id → surname table read from a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameTable {
    names: BTreeMap<String, String>,
}

impl NameTable {
    /// A table from pairs (for callers that build it themselves).
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> NameTable {
        NameTable {
            names: pairs.into_iter().collect(),
        }
    }

    /// The surname of `id`.
    pub fn get(&self, id: &str) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The entries, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Reads a names file: a JSON object `{"<id>": "<surname>", …}` (when the text starts with
    /// `{`), or CSV (RFC 4180, comma or semicolon separated) whose header names the columns
    /// `id_column` and `surname` (other columns are ignored, names are case-insensitive).
    pub fn load(path: &Path, id_column: &str) -> Result<NameTable, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("names file `{}`: cannot read: {e}", path.display()))?;
        NameTable::parse(&text, id_column)
            .map_err(|e| format!("names file `{}`: {e}", path.display()))
    }

    /// Parses the text of a names file (see [`NameTable::load`]).
    pub fn parse(text: &str, id_column: &str) -> Result<NameTable, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let pairs = if text.trim_start().starts_with('{') {
            let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|e| {
                format!("not a json object of `{id_column}` to surname strings: {e}")
            })?;
            map.into_iter().collect::<Vec<_>>()
        } else {
            csv_pairs(text, id_column)?
        };
        let mut names = BTreeMap::new();
        for (id, name) in pairs {
            let id = id.trim().to_string();
            let name = name.trim().to_string();
            if id.is_empty() {
                return Err(format!("an entry has an empty `{id_column}`"));
            }
            if let Some(old) = names.get(&id)
                && *old != name
            {
                return Err(format!("`{id}` is listed twice with different surnames"));
            }
            names.insert(id, name);
        }
        Ok(NameTable { names })
    }
}

/// The `(id, surname)` pairs of a CSV text with a header line.
fn csv_pairs(text: &str, id_column: &str) -> Result<Vec<(String, String)>, String> {
    let first = text.lines().next().unwrap_or_default();
    let sep = if first.matches(';').count() > first.matches(',').count() {
        ';'
    } else {
        ','
    };
    let mut rows = csv_rows(text, sep)?.into_iter();
    let header = rows
        .next()
        .ok_or_else(|| format!("empty file: expected a header with `{id_column}` and `surname`"))?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("the header has no column `{name}` (expected `{id_column}` and `surname`)")
            })
    };
    let (id_at, name_at) = (col(id_column)?, col("surname")?);
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        match (row.get(id_at), row.get(name_at)) {
            (Some(id), Some(name)) => out.push((id.clone(), name.clone())),
            _ => return Err(format!("line {} has too few columns", i + 2)),
        }
    }
    Ok(out)
}

/// RFC 4180 rows: fields separated by `sep`, optionally quoted with `"` (a doubled `"` inside).
fn csv_rows(text: &str, sep: char) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            c if c == sep => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                line += 1;
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {line}: unterminated quoted field"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn keys(s: &str) -> Vec<String> {
        surname_keys(s).into_iter().collect()
    }

    #[test]
    fn voorvoegsels_case_and_diacritics_are_ignored() {
        assert_eq!(keys("van der Berg"), ["berg"]);
        assert_eq!(keys("Van Den Berg"), ["berg"]);
        assert_eq!(keys("Berg, van der"), ["berg"]);
        assert_eq!(keys("BERG"), ["berg"]);
        assert_eq!(keys("'t Hart"), ["hart"]);
        assert_eq!(keys("’t Hart"), ["hart"]);
        assert_eq!(keys("d'Ancona"), ["ancona"]);
        assert_eq!(keys("van 't Hof"), ["hof"]);
        assert_eq!(keys("Müller"), ["muller"]);
        assert_eq!(keys("Çelik"), ["celik"]);
        assert_eq!(keys("de la Cruz"), ["cruz"]);
        assert_eq!(keys("Jansen-van Dijk"), ["dijk", "jansen"]);
        // A name of prefix words only keeps its last word; a name without letters has no key.
        assert_eq!(keys("Van"), ["van"]);
        assert!(keys(" - ").is_empty());
        // Words after the surname proper stay (`Boer` is not `de Boer Jansen`).
        assert_eq!(keys("de Boer Jansen"), ["boer jansen"]);
    }

    #[test]
    fn shared_surname_compares_normalised_keys() {
        assert_eq!(
            shared_surname("van der Berg", "Berg"),
            Some("berg".to_string())
        );
        assert_eq!(
            shared_surname("Smit-van Dijk", "Van Dijk"),
            Some("dijk".to_string())
        );
        assert_eq!(shared_surname("Bergen", "van der Berg"), None);
        assert_eq!(shared_surname("de Vries", "de Jong"), None);
    }

    #[test]
    fn names_files_in_json_and_csv() {
        let json = NameTable::parse(
            r#"{"emp-042": "van der Berg", "emp-7": "Jansen"}"#,
            "employee",
        )
        .unwrap();
        assert_eq!(json.get("emp-042"), Some("van der Berg"));
        assert_eq!(json.len(), 2);

        let csv = "\u{feff}Employee;Department;Surname\r\nemp-042;Burgerzaken;\"Berg, van der\"\r\n\r\nemp-7;X;\"O\"\"Neill\"\n";
        let t = NameTable::parse(csv, "employee").unwrap();
        assert_eq!(t.get("emp-042"), Some("Berg, van der"));
        assert_eq!(t.get("emp-7"), Some("O\"Neill"));

        let err = NameTable::parse("id,name\n1,x\n", "bsn").unwrap_err();
        assert!(err.contains("no column `bsn`"), "{err}");
        let err = NameTable::parse("bsn,surname\n1,a\n1,b\n", "bsn").unwrap_err();
        assert!(err.contains("listed twice"), "{err}");
        let err = NameTable::parse("bsn,surname\n\"1,a\n", "bsn").unwrap_err();
        assert!(err.contains("unterminated"), "{err}");
        assert!(NameTable::parse("[1,2]", "bsn").is_err());
    }
}
