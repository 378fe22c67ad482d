//! `raft-kv status`: asks every member for `INFO raft` and prints one table row per member. A member
//! that does not answer is shown as down; the others still answer. A second table shows each
//! answering member's snapshot: what it covers, where its log starts, and the snapshot counters
//! (since that node started). A field a node does not report (an older version) shows as `-`.
//! Members are those of `--group-config` plus every member the answering nodes' membership names
//! (so nodes added since `-gc` was written show up); KIND is what each node says it is (voter,
//! learner, standby, or removed: a node whose membership no longer lists it).

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

/// Queries every member of `group`, then every member the answers name (`member_<name>` lines of
/// `INFO raft`: the cluster's membership, which may have changed since `-gc` was written) that
/// `group` does not list. Rows are sorted by name.
pub fn collect(group: &Group, timeout: Duration) -> Vec<Row> {
    let listed: Vec<(String, String)> =
        group.members.iter().map(|m| (m.name.clone(), m.server_addr())).collect();
    let mut rows = collect_addrs(listed, timeout);
    let mut found: Vec<(String, String)> = Vec::new();
    for info in rows.iter().filter_map(|r| r.info.as_ref()) {
        for (key, value) in info {
            let Some(name) = key.strip_prefix("member_") else { continue };
            let client = value.split(',').find_map(|f| f.strip_prefix("client="));
            if let Some(addr) = client {
                if !rows.iter().any(|r| r.name == name) && !found.iter().any(|(n, _)| n == name) {
                    found.push((name.to_string(), addr.to_string()));
                }
            }
        }
    }
    rows.extend(collect_addrs(found, timeout));
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// The member's kind (`voter`, `learner`) as its own `INFO raft` says; `-` if it does not say.
fn kind(name: &str, info: &BTreeMap<String, String>) -> String {
    if info.get("role").is_some_and(|r| r == "standby") {
        return "standby".into();
    }
    info.get(&format!("member_{name}"))
        .and_then(|v| v.split(',').find_map(|f| f.strip_prefix("kind=")).map(String::from))
        .unwrap_or_else(|| if info.contains_key("voters") { "removed".into() } else { "-".into() })
}

/// Queries `(name, client address)` pairs in parallel.
fn collect_addrs(members: Vec<(String, String)>, timeout: Duration) -> Vec<Row> {
    let handles: Vec<_> = members
        .into_iter()
        .map(|(name, addr)| {
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
        "KIND".into(),
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
                    kind(&r.name, i),
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
                "-".into(),
                "down".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
        }
    }
    let mut out = format_table(&table);
    let mut snapshots = vec![[
        "ID",
        "LOG_FIRST",
        "SNAPSHOT",
        "SNAP_TERM",
        "SNAP_SIZE",
        "WRITING",
        "TAKEN",
        "INSTALLED",
        "SENT",
        "CHUNKS_SENT",
        "REJECTED",
    ]
    .map(String::from)
    .to_vec()];
    for r in rows {
        let Some(i) = &r.info else { continue };
        let get = |k: &str| i.get(k).cloned().unwrap_or_else(|| "-".into());
        let size = i.get("snapshot_bytes").and_then(|b| b.parse::<u64>().ok()).map_or("-".into(), human_size);
        let writing = match i.get("snapshot_in_progress").map(String::as_str) {
            Some("1") => "yes".to_string(),
            Some("0") => "no".to_string(),
            _ => "-".to_string(),
        };
        snapshots.push(vec![
            r.name.clone(),
            get("log_first_index"),
            get("snapshot_index"),
            get("snapshot_term"),
            size,
            writing,
            get("snapshots_taken"),
            get("snapshots_installed"),
            get("snapshots_sent"),
            get("snapshot_chunks_sent"),
            get("snapshots_rejected"),
        ]);
    }
    if snapshots.len() > 1 {
        out.push('\n');
        out.push_str(&format_table(&snapshots));
    }
    for r in rows {
        if let Some(e) = &r.error {
            out.push_str(&format!("{} ({}): {e}\n", r.name, r.addr));
        }
    }
    out
}

/// Left-aligned columns separated by two spaces.
fn format_table(table: &[Vec<String>]) -> String {
    let widths: Vec<usize> =
        (0..table[0].len()).map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `1536` -> `1.5 KiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_up_and_down_members() {
        let info = parse_info(
            "# Raft\r\nnode_id:A\r\nrole:leader\r\nterm:3\r\nleader:A\r\ncommit_index:10\r\napplied_index:10\r\n\
             voters:A,B\r\nmember_A:id=1,kind=voter,client=h:1,core=h:9,match=10,lag=0\r\n\
             log_first_index:4\r\nsnapshot_index:8\r\nsnapshot_term:2\r\nsnapshot_bytes:1536\r\n\
             snapshot_in_progress:1\r\nsnapshots_taken:3\r\nsnapshots_installed:0\r\nsnapshots_sent:1\r\n\
             snapshot_chunks_sent:12\r\nsnapshots_rejected:0\r\n",
        );
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
        assert!(lines[0].contains("KIND") && lines[1].contains(" voter "), "{text}");
        assert!(lines[2].contains("follower") && lines[2].ends_with('4'), "{text}");
        assert!(lines[3].contains("down"), "{text}");
        assert!(text.contains("C (h:3): connection refused"));
        // The snapshot table: one row per answering member; unknown fields (an older node) are "-".
        assert_eq!(lines[4], "", "{text}");
        assert!(lines[5].starts_with("ID") && lines[5].contains("SNAPSHOT"), "{text}");
        let a: Vec<&str> = lines[6].split_whitespace().collect();
        assert_eq!(a, ["A", "4", "8", "2", "1.5", "KiB", "yes", "3", "0", "1", "12", "0"], "{text}");
        let b: Vec<&str> = lines[7].split_whitespace().collect();
        assert_eq!(b, ["B", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"], "{text}");
        assert!(lines[8].starts_with("C (h:3)"), "{text}");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
    }
}
