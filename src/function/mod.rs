//! What a function is made of: its runtime and its source.

pub mod dependencies;
pub mod runtime;
pub mod source;
