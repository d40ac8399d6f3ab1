//! X user ids: strings of 1 to 19 ASCII digits without a leading zero, the same rule the
//! schema's CHECK constraints apply, checked here first so the CLI and library can say what is
//! wrong before any SQL runs.

use std::fmt;

/// The most characters of a bad id an error quotes: enough to find it in a file, never a whole
/// pasted line (which could hold anything, a token included).
const MAX_QUOTED_CHARS: usize = 24;

/// A syntactically valid X user id (`^[1-9][0-9]{0,18}$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct UserId(String);

/// What is wrong with an id. The id is quoted cut to a few dozen characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id is empty")]
    Empty,
    #[error("user id {0} is longer than 19 digits")]
    TooLong(String),
    #[error("user id {0} must contain only the digits 0-9")]
    NotDigits(String),
    #[error("user id {0} starts with 0: X user ids have no leading zeros")]
    LeadingZero(String),
}

impl UserId {
    pub fn parse(raw: &str) -> Result<UserId, UserIdError> {
        if raw.is_empty() {
            return Err(UserIdError::Empty);
        }
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UserIdError::NotDigits(quoted(raw)));
        }
        if raw.len() > 19 {
            return Err(UserIdError::TooLong(quoted(raw)));
        }
        if raw.starts_with('0') {
            return Err(UserIdError::LeadingZero(quoted(raw)));
        }
        Ok(UserId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `raw` in quotes, cut to [`MAX_QUOTED_CHARS`] characters (an ellipsis says it was cut).
fn quoted(raw: &str) -> String {
    let mut chars = raw.chars();
    let shown: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        format!("{shown:?}…")
    } else {
        format!("{shown:?}")
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

/// A user id binds as `text` and reads from `text` (the schema's id domains read as their
/// base type), checked again on the way in: a malformed id in a row is a decode
/// error naming the id's first characters, never a `UserId` that breaks the rule.
impl sqlx::Type<sqlx::Postgres> for UserId {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for UserId {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for UserId {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let raw = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(UserId::parse(raw)?)
    }
}

impl sqlx::postgres::PgHasArrayType for UserId {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_to_nineteen_digits() {
        assert!(UserId::parse("1").is_ok());
        assert!(UserId::parse("10").is_ok());
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

    #[test]
    fn refuses_leading_zeros_and_zero_itself() {
        for raw in ["0", "07", "0007", "0000000000000000001"] {
            assert!(
                matches!(UserId::parse(raw), Err(UserIdError::LeadingZero(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn quotes_a_long_bad_id_cut_short() {
        let pasted = format!("12,{}", "SECRET".repeat(100));
        let text = UserId::parse(&pasted).unwrap_err().to_string();
        assert!(text.len() < 80, "{text}");
        assert!(text.contains("\"12,SECRET"), "{text}");
        assert!(text.contains('…'), "{text}");
        assert_eq!(
            UserId::parse("12a").unwrap_err().to_string(),
            "user id \"12a\" must contain only the digits 0-9"
        );
    }
}
