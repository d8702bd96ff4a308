//! What a function is made of: its runtime and its source.

pub mod dependencies;
pub mod fs;
mod ignore;
pub mod links;
pub mod runtime;
pub mod source;
