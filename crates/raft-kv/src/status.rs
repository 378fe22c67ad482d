//! `raft-kv status`: asks every member for `INFO raft` and prints one table row per member. A member
//! that does not answer is shown as down; the others still answer.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::Group;
use crate::resp::client::Connection;
use crate::resp::Frame;

/// One member's row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Member name.
    pub name: String,
    /// Its client address.
    pub addr: String,
    /// The `INFO raft` fields, or None if it did not answer.
    pub info: Option<BTreeMap<String, String>>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// Parses `key:value` lines of an INFO text.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Queries every member.
pub fn collect(group: &Group, timeout: Duration) -> Vec<Row> {
    let handles: Vec<_> = group
        .members
        .iter()
        .map(|m| {
            let (name, addr) = (m.name.clone(), m.server_addr());
            std::thread::spawn(move || {
                let result = Connection::connect(&addr, timeout).and_then(|mut c| {
                    c.set_timeout(Some(timeout))?;
                    c.request(&["INFO", "raft"])
                });
                match result {
                    Ok(Frame::Bulk(b)) => {
                        Row { name, addr, info: Some(parse_info(&String::from_utf8_lossy(&b))), error: None }
                    }
                    Ok(other) => {
                        Row { name, addr, info: None, error: Some(format!("unexpected reply {other:?}")) }
                    }
                    Err(e) => Row { name, addr, info: None, error: Some(e.to_string()) },
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| Row {
                name: "?".into(),
                addr: "?".into(),
                info: None,
                error: Some("query thread panicked".into()),
            })
        })
        .collect()
}

/// Renders the table.
pub fn render(rows: &[Row]) -> String {
    let max_commit = rows
        .iter()
        .filter_map(|r| r.info.as_ref()?.get("commit_index")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut table = vec![vec![
        "ID".to_string(),
        "ADDRESS".into(),
        "ROLE".into(),
        "TERM".into(),
        "LEADER".into(),
        "COMMIT".into(),
        "APPLIED".into(),
        "LAG".into(),
    ]];
    for r in rows {
        match &r.info {
            Some(i) => {
                let get = |k: &str| i.get(k).cloned().unwrap_or_default();
                let applied: u64 = get("applied_index").parse().unwrap_or(0);
                table.push(vec![
                    r.name.clone(),
                    r.addr.clone(),
                    get("role"),
                    get("term"),
                    get("leader"),
                    get("commit_index"),
                    get("applied_index"),
                    max_commit.saturating_sub(applied).to_string(),
                ]);
            }
            None => table.push(vec![
                r.name.clone(),
                r.addr.clone(),
                "down".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
        }
    }
    let widths: Vec<usize> =
        (0..table[0].len()).map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for r in rows {
        if let Some(e) = &r.error {
            out.push_str(&format!("{} ({}): {e}\n", r.name, r.addr));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_up_and_down_members() {
        let info = parse_info("# Raft\r\nnode_id:A\r\nrole:leader\r\nterm:3\r\nleader:A\r\ncommit_index:10\r\napplied_index:10\r\n");
        let lagging =
            parse_info("role:follower\r\nterm:3\r\nleader:A\r\ncommit_index:7\r\napplied_index:6\r\n");
        let rows = vec![
            Row { name: "A".into(), addr: "h:1".into(), info: Some(info), error: None },
            Row { name: "B".into(), addr: "h:2".into(), info: Some(lagging), error: None },
            Row {
                name: "C".into(),
                addr: "h:3".into(),
                info: None,
                error: Some("connection refused".into()),
            },
        ];
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"));
        assert!(lines[1].contains("leader") && lines[1].ends_with('0'), "{text}");
        assert!(lines[2].contains("follower") && lines[2].ends_with('4'), "{text}");
        assert!(lines[3].contains("down"), "{text}");
        assert!(text.contains("C (h:3): connection refused"));
    }
}
