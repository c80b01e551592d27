//! The comm manager. ferrolab registers no comm targets yet, so it answers the
//! protocol correctly: `comm_info` lists open comms, a `comm_open` for an unknown
//! target is closed at once (as the spec asks), and messages for unknown comms are
//! logged and ignored.

use jupyter_protocol::{CommClose, CommId, CommInfo, CommInfoReply, CommOpen, ReplyStatus};
use std::collections::HashMap;

#[derive(Default)]
pub struct Comms {
    open: HashMap<String, String>,
    /// Targets the kernel can open comms for (none yet).
    targets: Vec<String>,
}

/// What to do after a `comm_open`.
pub enum Opened {
    Accepted,
    /// Unknown target: send this `comm_close` on iopub.
    Rejected(CommClose),
}

impl Comms {
    pub fn info(&self, target_name: Option<&str>) -> CommInfoReply {
        let comms = self
            .open
            .iter()
            .filter(|(_, target)| target_name.is_none_or(|t| t == target.as_str()))
            .map(|(id, target)| {
                (
                    CommId(id.clone()),
                    CommInfo {
                        target_name: target.clone(),
                    },
                )
            })
            .collect();
        CommInfoReply {
            status: ReplyStatus::Ok,
            comms,
            error: None,
        }
    }

    pub fn open(&mut self, open: &CommOpen) -> Opened {
        if self.targets.contains(&open.target_name) {
            self.open
                .insert(open.comm_id.0.clone(), open.target_name.clone());
            Opened::Accepted
        } else {
            log::info!(
                "comm_open for unknown target `{}`; closing comm {}",
                open.target_name,
                open.comm_id.0
            );
            Opened::Rejected(CommClose {
                comm_id: open.comm_id.clone(),
                data: Default::default(),
            })
        }
    }

    pub fn message(&mut self, comm_id: &str) {
        if !self.open.contains_key(comm_id) {
            log::info!("comm_msg for unknown comm {comm_id}; ignored");
        }
    }

    pub fn close(&mut self, comm_id: &str) {
        if self.open.remove(comm_id).is_none() {
            log::info!("comm_close for unknown comm {comm_id}; ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_targets_are_closed_and_not_listed() {
        let mut comms = Comms::default();
        let open = CommOpen {
            comm_id: CommId("c1".into()),
            target_name: "jupyter.widget".into(),
            data: Default::default(),
            target_module: None,
        };
        match comms.open(&open) {
            Opened::Rejected(close) => assert_eq!(close.comm_id.0, "c1"),
            Opened::Accepted => panic!("no targets are registered"),
        }
        assert!(comms.info(None).comms.is_empty());
        comms.targets.push("t".into());
        let open = CommOpen {
            target_name: "t".into(),
            ..open
        };
        assert!(matches!(comms.open(&open), Opened::Accepted));
        assert_eq!(comms.info(Some("t")).comms.len(), 1);
        assert!(comms.info(Some("other")).comms.is_empty());
        comms.close("c1");
        assert!(comms.info(None).comms.is_empty());
    }
}
