//! Which FreeSWITCH node a send goes through (`[freeswitch] socket` repeated).
//!
//! The order for one job: as listed (`nodeselection = order`) or rotated by the job id
//! (`spread`, so a retry starts on the same node). A node that could not be reached is
//! remembered as down for [`DOWN_FOR`] in the spool's `tmp/` (one small file per node, written
//! whole and renamed), so separate fsfaxsend processes skip it first; it is still tried last,
//! never left out: a memory may be wrong, and a fax is never refused without trying every node.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::{FreeSwitchSection, Node, NodeSelection};

/// How long a node found down is tried only after the others.
pub(super) const DOWN_FOR: Duration = Duration::from_secs(60);

/// Causes that mean the node could not place the call at all (its gateway is down or unknown
/// there, or it is shutting down): no INVITE reached the destination, so the next node may try.
const NODE_CAUSES: &[&str] = &["GATEWAY_DOWN", "INVALID_GATEWAY", "SYSTEM_SHUTDOWN"];

/// The nodes for job `jobid`, in the order to try them.
pub(super) fn order(fs: &FreeSwitchSection, spooldir: &Path, jobid: u32) -> Vec<Node> {
    let mut nodes = fs.node_list();
    if nodes.is_empty() {
        nodes.push(Node {
            socket: fs.socket.clone(),
            password: fs.password.clone(),
        });
    }
    if fs.node_selection == NodeSelection::Spread && nodes.len() > 1 {
        let start = jobid as usize % nodes.len();
        nodes.rotate_left(start);
    }
    if nodes.len() > 1 {
        let now = SystemTime::now();
        // Stable: the nodes found down keep their order among themselves, after the others.
        nodes.sort_by_key(|n| is_down(spooldir, &n.socket, now));
    }
    nodes
}

/// Whether every failed originate on a node says the node itself could not place the call.
pub(super) fn node_could_not_place(causes: &[String]) -> bool {
    !causes.is_empty()
        && causes
            .iter()
            .all(|c| NODE_CAUSES.iter().any(|n| c.contains(n)))
}

fn marker(spooldir: &Path, socket: &str) -> PathBuf {
    let name: String = socket
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    spooldir.join("tmp").join(format!("fsfax-node-down.{name}"))
}

fn is_down(spooldir: &Path, socket: &str, now: SystemTime) -> bool {
    std::fs::metadata(marker(spooldir, socket))
        .and_then(|m| m.modified())
        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < DOWN_FOR)
}

/// Remembers `node` as down (for [`DOWN_FOR`]), with the reason for an admin who looks.
pub(super) fn mark_down(spooldir: &Path, socket: &str, why: &str) {
    let path = marker(spooldir, socket);
    let tmp = path.with_extension(format!("{}.new", std::process::id()));
    let text = format!("{socket} unreachable: {why}\n");
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(
            "cannot remember node {socket} as down in {}: {e}",
            path.display()
        );
    }
}

/// Forgets that `node` was down (it took a call).
pub(super) fn mark_up(spooldir: &Path, socket: &str) {
    let _ = std::fs::remove_file(marker(spooldir, socket));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(nodes: &[&str], selection: NodeSelection) -> FreeSwitchSection {
        FreeSwitchSection {
            socket: nodes[0].into(),
            nodes: nodes[1..].iter().map(|n| (*n).to_owned()).collect(),
            node_passwords: vec![("b:2".into(), "secret-b".into())],
            password: "ClueCon".into(),
            node_selection: selection,
            ..FreeSwitchSection::default()
        }
    }

    fn sockets(nodes: &[Node]) -> Vec<&str> {
        nodes.iter().map(|n| n.socket.as_str()).collect()
    }

    #[test]
    fn order_spread_and_passwords() {
        let spool = tempfile::tempdir().unwrap();
        std::fs::create_dir(spool.path().join("tmp")).unwrap();
        let fs = section(&["a:1", "b:2", "c:3"], NodeSelection::Order);
        let nodes = order(&fs, spool.path(), 7);
        assert_eq!(sockets(&nodes), ["a:1", "b:2", "c:3"]);
        assert_eq!(nodes[0].password, "ClueCon");
        assert_eq!(nodes[1].password, "secret-b");
        let fs = section(&["a:1", "b:2", "c:3"], NodeSelection::Spread);
        assert_eq!(sockets(&order(&fs, spool.path(), 7)), ["b:2", "c:3", "a:1"]);
        // Stable per job: the retry of job 7 starts on the same node.
        assert_eq!(sockets(&order(&fs, spool.path(), 7)), ["b:2", "c:3", "a:1"]);
        assert_eq!(sockets(&order(&fs, spool.path(), 9)), ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn a_node_found_down_goes_last_but_is_still_tried() {
        let spool = tempfile::tempdir().unwrap();
        std::fs::create_dir(spool.path().join("tmp")).unwrap();
        let fs = section(&["a:1", "b:2", "[::1]:3"], NodeSelection::Order);
        mark_down(spool.path(), "a:1", "connection refused");
        mark_down(spool.path(), "[::1]:3", "timeout");
        assert_eq!(
            sockets(&order(&fs, spool.path(), 1)),
            ["b:2", "a:1", "[::1]:3"]
        );
        let text = std::fs::read_to_string(marker(spool.path(), "a:1")).unwrap();
        assert!(text.contains("connection refused"), "{text}");
        mark_up(spool.path(), "a:1");
        assert_eq!(
            sockets(&order(&fs, spool.path(), 1)),
            ["a:1", "b:2", "[::1]:3"]
        );
        // A memory older than DOWN_FOR is forgotten.
        let old = SystemTime::now() - DOWN_FOR - Duration::from_secs(1);
        let f = std::fs::File::options()
            .write(true)
            .open(marker(spool.path(), "[::1]:3"))
            .unwrap();
        f.set_modified(old).unwrap();
        assert_eq!(
            sockets(&order(&fs, spool.path(), 1)),
            ["a:1", "b:2", "[::1]:3"]
        );
    }

    #[test]
    fn only_node_level_causes_move_to_the_next_node() {
        let c = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(node_could_not_place(&c(&[
            "GATEWAY_DOWN",
            "INVALID_GATEWAY"
        ])));
        assert!(!node_could_not_place(&c(&["GATEWAY_DOWN", "USER_BUSY"])));
        assert!(!node_could_not_place(&c(&["CALL_REJECTED"])));
        assert!(!node_could_not_place(&[]));
    }
}
