//! Accounts: the authenticated X users whose follows followq sends, their credentials and
//! their state (active, paused, needs_reauth, disabled).
//!
//! Credentials live in `followq.account_credentials`, apart from `followq.accounts`, so that a
//! database role that only enqueues can be denied them, and every token there is encrypted
//! (`sealed`, with the keys of `keyring`). In Rust every token is a
//! [`secrecy::SecretString`]: its `Debug` prints `[REDACTED]`.

pub mod app_follows;
pub mod credentials;
pub mod keyring;
mod refresh_claim;
pub mod register;
pub mod rekey;
pub mod sealed;
pub mod token_store;

pub use credentials::{AuthKind, Credentials, TokenError};
pub use keyring::{KeyError, KeyRing};
pub use register::{AccountError, NewAccount, Quota, Registered, register};
pub use token_store::{AuthError, TokenStore};
