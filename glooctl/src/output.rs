//! How `get` and `status` print objects: an aligned table for people, or the documents of
//! [`crate::docs`] as YAML (applies again) or JSON (for scripts).
use std::io::Write;

use proto::v1::{status::State, Resource};

use crate::{docs, error::Error, kinds};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Yaml,
    Json,
}

/// Reasons longer than this are cut in tables; `-o yaml` and `status` show them whole.
const REASON_WIDTH: usize = 48;

/// One object, as `get KIND NAME` prints it.
pub fn one(r: &Resource, format: Format, out: &mut dyn Write) -> Result<(), Error> {
    match format {
        Format::Table => objects_table(std::slice::from_ref(r), out),
        Format::Yaml => Ok(out.write_all(docs::to_yaml(std::slice::from_ref(r))?.as_bytes())?),
        Format::Json => {
            let doc = docs::to_doc(r)?;
            json(&doc, out)
        }
    }
}

/// A list, as `get KIND` prints it: YAML documents separated by `---`, or `{"items": [...]}`.
pub fn list(rs: &[Resource], format: Format, out: &mut dyn Write) -> Result<(), Error> {
    match format {
        Format::Table => objects_table(rs, out),
        Format::Yaml => Ok(out.write_all(docs::to_yaml(rs)?.as_bytes())?),
        Format::Json => {
            /// Serialized as a struct, so each document keeps its field order.
            #[derive(serde::Serialize)]
            struct Items {
                items: Vec<docs::OutDoc>,
            }
            let items = rs.iter().map(docs::to_doc).collect::<Result<_, _>>()?;
            json(&Items { items }, out)
        }
    }
}

fn json(value: &impl serde::Serialize, out: &mut dyn Write) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| Error::Output(e.into()))?;
    Ok(writeln!(out)?)
}

fn objects_table(rs: &[Resource], out: &mut dyn Write) -> Result<(), Error> {
    let rows = rs
        .iter()
        .map(|r| {
            let meta = r.metadata.clone().unwrap_or_default();
            vec![
                meta.namespace,
                meta.name,
                state(r).to_string(),
                truncate(&reason(r), REASON_WIDTH),
                meta.owner,
                meta.resource_version.to_string(),
            ]
        })
        .collect();
    table(
        &["NAMESPACE", "NAME", "STATUS", "REASON", "OWNER", "VERSION"],
        rows,
        out,
    )
}

/// `status`: every object that is not Accepted, with the whole reason.
pub fn status_table(rs: &[&Resource], out: &mut dyn Write) -> Result<(), Error> {
    let rows = rs
        .iter()
        .map(|r| {
            let meta = r.metadata.clone().unwrap_or_default();
            let kind = r
                .spec
                .as_ref()
                .map_or("unknown", |s| kinds::singular(kinds::of_spec(s)));
            vec![
                kind.to_string(),
                meta.namespace,
                meta.name,
                state(r).to_string(),
                reason(r),
            ]
        })
        .collect();
    table(&["KIND", "NAMESPACE", "NAME", "STATE", "REASON"], rows, out)
}

/// An object nobody has reported on yet is Pending, as the store writes it.
pub fn state(r: &Resource) -> &'static str {
    r.status
        .as_ref()
        .map_or(State::Pending.as_str_name(), |s| docs::state_name(s.state))
}

fn reason(r: &Resource) -> String {
    // A reason is one line in a table, whatever the reporter wrote.
    r.status
        .as_ref()
        .map(|s| s.reason.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(width - 1).collect();
        cut.push('…');
        cut
    }
}

/// Columns padded to their widest cell, three spaces apart, like kubectl.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>, out: &mut dyn Write) -> Result<(), Error> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 3));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_cut_long_reasons() {
        let mut out = Vec::new();
        table(
            &["A", "LONGER"],
            vec![
                vec!["xxxxx".into(), "1".into()],
                vec!["y".into(), "2".into()],
            ],
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A       LONGER\nxxxxx   1\ny       2\n"
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
