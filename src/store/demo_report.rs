//! (being moved here)

use super::Statement;

pub const STATEMENTS: &[Statement] = &[];
