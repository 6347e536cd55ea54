//! Commands over NATS: a JSON command `{"id","tag","value"}` published on
//! `{prefix}.cmd.{id}` (the id defaults to the subject's last token) is
//! carried to the owning driver ([`crate::commands`]) and answered with
//! `{"id","tag","status","message","ts"}`: to the request's reply inbox when
//! it has one (so `nats request gw.line1.cmd.c1 '{...}'` waits for the
//! device's answer), else on `{prefix}.cmd_ack.{id}`. Answers are plain
//! NATS messages, not stream messages: a requester that is gone does not
//! get them later.
//!
//! Whoever may publish on `{prefix}.cmd.>` may write set-points: the NATS
//! account's permissions must restrict it (see `docs/fleet.md`). Every
//! command is audited with the actor `nats:{connector}`.

use super::config::subject_safe;

/// The subject commands arrive on.
pub(super) fn command_subject(prefix: &str) -> String {
    format!("{prefix}.cmd.>")
}

/// The id a command on `subject` goes by when its body names none.
pub(super) fn fallback_id(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or("cmd")
}

/// Where the answer to command `id` goes: the reply inbox, or `{prefix}.cmd_ack.{id}`.
pub(super) fn answer_subject(prefix: &str, reply: Option<&str>, id: &str) -> String {
    match reply {
        Some(r) => r.to_owned(),
        None => format!("{prefix}.cmd_ack.{}", subject_safe(&id.replace('.', "_"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_goes_to_the_reply_inbox_or_to_a_subject_safe_for_its_id() {
        assert_eq!(command_subject("gw.line1"), "gw.line1.cmd.>");
        assert_eq!(fallback_id("gw.line1.cmd.c7"), "c7");
        assert_eq!(answer_subject("gw.line1", Some("_INBOX.x"), "c7"), "_INBOX.x");
        assert_eq!(answer_subject("gw.line1", None, "a.b *>"), "gw.line1.cmd_ack.a_b___");
    }
}
