//! The one place where the layers meet: ESL events feed the fax domain through its
//! [`EventHeaders`] trait, so `fax` never imports `esl` (DESIGN.md).

use crate::esl::Event;
use crate::fax::EventHeaders;

impl EventHeaders for Event {
    fn header(&self, name: &str) -> Option<&str> {
        // esl::Headers already compares names case-insensitively and percent-decodes values.
        self.get(name)
    }
}
