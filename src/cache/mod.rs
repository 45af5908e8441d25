//! The cache: keys, stored entries and the rules for what may be stored.

pub mod head;
pub mod key;
pub mod policy;
pub mod store;

pub use head::{Head, Wire};
pub use key::CacheKey;
pub use policy::Disposition;
pub use store::{Entry, Store};
