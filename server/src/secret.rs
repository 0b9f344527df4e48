//! The secret type, shared with the SMTP session library so that a secret is never copied
//! from one wrapper into another: `Debug` and `Display` print `<redacted>`, and the buffer is
//! zeroized on drop.

pub use mailplane_smtp::Secret;
