//! X user ids: strings of 1 to 19 ASCII digits, the same rule the schema's CHECK constraints
//! apply, checked here first so the CLI and library can say what is wrong before any SQL runs.

use std::fmt;

/// A syntactically valid X user id (`^[0-9]{1,19}$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id is empty")]
    Empty,
    #[error("user id {0:?} is longer than 19 digits")]
    TooLong(String),
    #[error("user id {0:?} must contain only the digits 0-9")]
    NotDigits(String),
}

impl UserId {
    pub fn parse(raw: &str) -> Result<UserId, UserIdError> {
        if raw.is_empty() {
            return Err(UserIdError::Empty);
        }
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UserIdError::NotDigits(raw.to_owned()));
        }
        if raw.len() > 19 {
            return Err(UserIdError::TooLong(raw.to_owned()));
        }
        Ok(UserId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for UserId {
    type Err = UserIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::parse(s)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_to_nineteen_digits() {
        assert!(UserId::parse("1").is_ok());
        assert!(UserId::parse("2244994945").is_ok());
        assert!(UserId::parse("9999999999999999999").is_ok());
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        assert_eq!(UserId::parse(""), Err(UserIdError::Empty));
        assert!(matches!(
            UserId::parse("12a"),
            Err(UserIdError::NotDigits(_))
        ));
        assert!(matches!(
            UserId::parse(" 12"),
            Err(UserIdError::NotDigits(_))
        ));
        assert!(matches!(
            UserId::parse("-1"),
            Err(UserIdError::NotDigits(_))
        ));
        assert!(matches!(
            UserId::parse("١٢"),
            Err(UserIdError::NotDigits(_))
        ));
        assert!(matches!(
            UserId::parse("12345678901234567890"),
            Err(UserIdError::TooLong(_))
        ));
    }
}
