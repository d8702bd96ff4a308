//! What a function is made of: its runtime and its source.

pub mod runtime;
pub mod source;
pub mod dependencies;
